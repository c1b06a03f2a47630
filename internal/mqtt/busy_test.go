package mqtt

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/api"
	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// blockingHandler holds every request until released, so that the workers
// and the queue fill.
type blockingHandler struct {
	entered chan string
	release chan struct{}
}

func (h blockingHandler) Handle(ctx context.Context, req api.Request) (any, *api.Error) {
	h.entered <- req.RequestID
	select {
	case <-h.release:
	case <-ctx.Done():
	}
	return map[string]string{"served": req.RequestID}, nil
}

// TestBusyDaemonAnswersInsteadOfDropping: with every worker busy and the
// queue full, a request is answered TOO_MANY_REQUESTS at its reply
// address; the queued one is served once a worker frees.
func TestBusyDaemonAnswersInsteadOfDropping(t *testing.T) {
	h := blockingHandler{entered: make(chan string, 4), release: make(chan struct{})}
	s, err := Start(Options{Listen: "127.0.0.1:0", BaseTopic: "nestmtx", Username: "u", Password: "pw",
		Workers: 1, Backlog: 1}, h, events.NewBus(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	c := testkit.Dial(t, s.BrokerAddr(), "u", "pw")
	rr, err := c.NewRR("nestmtx/requests")
	if err != nil {
		t.Fatal(err)
	}
	type answer struct {
		body string
		err  error
	}
	send := func(id string) chan answer {
		ch := make(chan answer, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			p, err := rr.Do(ctx, []byte(`{"command":"list","module":"version","requestId":"`+id+`"}`), nil)
			if err != nil {
				ch <- answer{err: err}
				return
			}
			ch <- answer{body: string(p.Payload)}
		}()
		return ch
	}
	first := send("r1")
	if id := <-h.entered; id != "r1" {
		t.Fatalf("served %s first", id)
	}
	second := send("r2") // waits in the queue
	testkit.Eventually(t, 5*time.Second, "r2 to be queued", func() bool { return len(s.backlog) == 1 })
	third := <-send("r3")
	if third.err != nil || !strings.Contains(third.body, "TOO_MANY_REQUESTS") || !strings.Contains(third.body, `"requestId":"r3"`) {
		t.Fatalf("a request past the full queue got %q, %v; want TOO_MANY_REQUESTS", third.body, third.err)
	}
	close(h.release)
	for _, ch := range []chan answer{first, second} {
		if a := <-ch; a.err != nil || !strings.Contains(a.body, "served") {
			t.Fatalf("a queued request: %q, %v", a.body, a.err)
		}
	}
}
