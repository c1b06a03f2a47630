package source_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/relay"
	"github.com/nestmtx/nestmtx/internal/source"
)

type noParent struct{}

func (noParent) Connected(context.Context, relay.Params) (*relay.Segment, error) {
	return nil, errors.New("unexpected")
}
func (noParent) Ready(relay.Params) {}

// TestOurOfferPassesGooglesChecks: the offer the WebRTC source makes passes
// the simulator's copy of Google's offer checks (m-line order audio, video,
// application; recvonly; H.264 packetization-mode 1 and Opus 48 kHz
// stereo; every candidate gathered, with a host one), for each audio mode.
func TestOurOfferPassesGooglesChecks(t *testing.T) {
	for _, audio := range []string{source.AudioOpus, source.AudioNone} {
		var offer string
		refused := errors.New("offer taken")
		err := source.WebRTC{Loopback: true}.Run(context.Background(), source.RunParams{StallTimeout: time.Second, Audio: audio,
			Negotiate: func(_ context.Context, sdp string) (string, error) {
				offer = sdp
				return "", refused
			}}, noParent{})
		if !errors.Is(err, refused) {
			t.Fatalf("audio %s: Run returned %v", audio, err)
		}
		if err := nestsim.ValidateOffer(offer); err != nil {
			t.Fatalf("audio %s: Google would refuse our offer: %v\n%s", audio, err, offer)
		}
	}
	// And the checks can fail: an offer that asks to send is refused.
	if nestsim.ValidateOffer("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\n") == nil {
		t.Fatal("a malformed offer passed")
	}
}
