package hooks

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// A hook's standard output and error go to the daemon's log, a line at a
// time: each line cut at LineBytes, and at most LinesPerSecond of them
// (with a burst of ten seconds' worth) logged per hook, so that a hook that
// floods its output costs the daemon neither memory nor a flooded log.
// The rest are read and dropped, and counted in the log.

// lineBudget is a token bucket of log lines, shared by a process's two
// streams.
type lineBudget struct {
	mu      sync.Mutex
	rate    float64 // lines per second
	burst   float64
	tokens  float64
	last    time.Time
	dropped int
	now     func() time.Time
}

func newLineBudget(perSecond int, now func() time.Time) *lineBudget {
	r := float64(perSecond)
	return &lineBudget{rate: r, burst: 10 * r, tokens: 10 * r, last: now(), now: now}
}

// take says whether a line may be logged, and how many were dropped since
// the last one that was.
func (b *lineBudget) take() (ok bool, droppedBefore int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.now()
	b.tokens = min(b.burst, b.tokens+t.Sub(b.last).Seconds()*b.rate)
	b.last = t
	if b.tokens < 1 {
		b.dropped++
		return false, 0
	}
	b.tokens--
	d := b.dropped
	b.dropped = 0
	return true, d
}

// flush reports lines dropped and not yet reported.
func (b *lineBudget) flush() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.dropped
	b.dropped = 0
	return d
}

// logLines logs r's lines until EOF or a read error (the pipe closed).
func logLines(r io.Reader, log *slog.Logger, stream string, maxLine int, budget *lineBudget) {
	br := bufio.NewReaderSize(r, maxLine)
	emit := func(line []byte, truncated bool) {
		ok, dropped := budget.take()
		if dropped > 0 {
			log.Warn("hook output dropped: the hook writes faster than the log takes", "lines", dropped)
		}
		if !ok {
			return
		}
		text := strings.ToValidUTF8(string(bytes.TrimRight(line, "\r\n")), "\uFFFD")
		if truncated {
			log.Info("hook output", "stream", stream, "line", text, "truncated", true)
		} else {
			log.Info("hook output", "stream", stream, "line", text)
		}
	}
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			emit(line, false)
		case errors.Is(err, bufio.ErrBufferFull):
			// A line longer than maxLine: its start is logged, the
			// rest read and dropped.
			emit(line, true)
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err != nil {
				return
			}
		default:
			if len(line) > 0 {
				emit(line, false) // the last line, without its newline
			}
			return
		}
	}
}
