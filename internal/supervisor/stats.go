package supervisor

import (
	"sync/atomic"
	"time"

	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/relay"
)

// Stats are a camera's figures since its supervisor started (the daemon's
// start, or the camera's creation). The byte and packet counters are the
// relay's: they restart with each relay (a stream that went idle and came
// back).
type Stats struct {
	BytesReceived   uint64 `json:"bytes_received"`   // RTP payload from Google
	PacketsReceived uint64 `json:"packets_received"` // RTP packets from Google
	BytesSent       uint64 `json:"bytes_sent"`       // to every reader, headers included
	PacketsSent     uint64 `json:"packets_sent"`
	ReadersTotal    uint64 `json:"readers_total"` // readers that played
	// ReadySince is when the stream last became ready (null when it is
	// not); ReadySeconds adds up every ready period.
	ReadySince   *time.Time `json:"ready_since"`
	ReadySeconds float64    `json:"ready_seconds"`
	// Swaps counts the upstream sessions that replaced another under the
	// readers (regenerations, hand-overs); LastSwapReason says why the
	// last one happened.
	Swaps          uint64 `json:"swaps"`
	Extensions     uint64 `json:"extensions"`
	Failures       uint64 `json:"failures"`
	LastSwapReason string `json:"last_swap_reason"`
	// BitrateKbps is the bitrate received from Google over the last
	// statistics period (about 10 s).
	BitrateKbps float64 `json:"bitrate_kbps"`
}

// statsPeriod spaces the state updates that only counters changed: the
// retained state is not republished for every packet.
const statsPeriod = 10 * time.Second

// counters are the camera goroutine's own tallies.
type counters struct {
	readersTotal, swaps, extensions, failures uint64
	lastSwapReason                            string
	// pendingSwap is why the next upstream will replace the current one.
	pendingSwap string
	readySince  time.Time
	readyTotal  time.Duration
	// for the bitrate: the received bytes and time at the last tick
	lastBytes uint64
	lastTick  time.Time
	bitrate   float64
	relay     *relay.Relay // the relay lastBytes was read from
}

// noteReady keeps the ready time in step with the phase; publishState
// calls it, as every phase change publishes.
func (c *Camera) noteReady() {
	now := c.clock.Now()
	switch {
	case c.phase == ready && c.counters.readySince.IsZero():
		c.counters.readySince = now
	case c.phase != ready && !c.counters.readySince.IsZero():
		c.counters.readyTotal += now.Sub(c.counters.readySince)
		c.counters.readySince = time.Time{}
	}
}

// stats is the camera's figures now.
func (c *Camera) stats() Stats {
	k := &c.counters
	st := Stats{ReadersTotal: k.readersTotal, Swaps: k.swaps, Extensions: k.extensions, Failures: k.failures,
		LastSwapReason: k.lastSwapReason, BitrateKbps: k.bitrate}
	total := k.readyTotal
	if !k.readySince.IsZero() {
		since := k.readySince.UTC()
		st.ReadySince = &since
		total += c.clock.Now().Sub(k.readySince)
	}
	st.ReadySeconds = total.Seconds()
	if c.relay != nil {
		rs := c.relay.Stats()
		st.BytesReceived, st.PacketsReceived = rs.BytesReceived, rs.PacketsReceived
		st.BytesSent, st.PacketsSent = rs.BytesSent, rs.PacketsSent
	}
	return st
}

// onStatsTick refreshes the bitrate and republishes the state while the
// camera has a relay.
func (c *Camera) onStatsTick() {
	k := &c.counters
	now := c.clock.Now()
	if c.relay == nil {
		k.bitrate, k.relay = 0, nil
		return
	}
	rs := c.relay.Stats()
	if k.relay == c.relay && now.After(k.lastTick) && rs.BytesReceived >= k.lastBytes {
		k.bitrate = float64(rs.BytesReceived-k.lastBytes) * 8 / 1000 / now.Sub(k.lastTick).Seconds()
	}
	k.relay, k.lastBytes, k.lastTick = c.relay, rs.BytesReceived, now
	c.publishState()
}

// Snapshot is a camera's last published state with its figures, for
// readers outside its goroutine (the API's cameras read, /metrics).
type Snapshot struct {
	ID    uint64
	Path  string
	Name  string
	State State
}

// snapshot is the camera's last published state; any goroutine may read
// it.
type snapshot = atomic.Pointer[Snapshot]

func (c *Camera) emitCounted(name string, details map[string]any) {
	switch name {
	case events.CameraRead:
		c.counters.readersTotal++
	case events.CameraExtended:
		c.counters.extensions++
	}
	c.emit(name, details)
}
