package transcode

import (
	"testing"
	"time"
)

func TestScratchRealtimeCPU(t *testing.T) {
	ffmpeg := requireFFmpeg(t)
	packets := rtpPackets(opusTone(t, ffmpeg, 10), 0, 42)
	s := newSink()
	a := start(t, ffmpeg, s, nil)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var c1 time.Duration
	for i, p := range packets {
		<-tick.C
		if i == 50 {
			c1 = a.Stats().ChildCPU
		}
		a.WriteOpus(p)
	}
	c2 := a.Stats().ChildCPU
	t.Logf("realtime steady: %v over %d s -> %.1f ms/s", c2-c1, (len(packets)-50)/50, float64((c2-c1).Milliseconds())/float64(len(packets)-50)*50)
}
