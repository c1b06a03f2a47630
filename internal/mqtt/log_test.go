package mqtt

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestBrokerWarningsAreRateLimited: any client can make mochi warn at will
// (a full queue, a refused publish); each text reaches the log at most once
// a minute, with the count held back.
func TestBrokerWarningsAreRateLimited(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(newBrokerLogHandler(slog.NewTextHandler(&buf, nil)))
	for i := 0; i < 1000; i++ {
		log.Warn("client store quota reached", "client", "x")
	}
	log.Info("a client connected") // mochi's chatter: not the operator's problem
	if n := strings.Count(buf.String(), "client store quota reached"); n != 1 {
		t.Fatalf("the warning was logged %d times, want once:\n%s", n, buf.String())
	}
	if strings.Contains(buf.String(), "a client connected") {
		t.Error("mochi's info chatter reached the log")
	}
}
