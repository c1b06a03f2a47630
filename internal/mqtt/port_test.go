package mqtt

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

// TestBusyPortSaysWhatToDo: a port already taken (by a Mosquitto on the
// same box, most often) fails the start with the two ways out, not a bare
// "address already in use".
func TestBusyPortSaysWhatToDo(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	b, err := StartBroker(BrokerOptions{Listen: busy.Addr().String()})
	if err == nil {
		b.Close()
		t.Fatal("the broker started on a busy port")
	}
	for _, want := range []string{busy.Addr().String(), "already in use", "NESTMTX_MQTT_URL", "NESTMTX_MQTT_LISTEN"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error %q does not say %q", err, want)
		}
	}
}

func TestDescribeConnectError(t *testing.T) {
	err := autopaho.NewConnackError(errors.New("denied"), &paho.Connack{ReasonCode: 0x86})
	if got := describeConnectError(err); !strings.Contains(got, "wrong MQTT username or password") {
		t.Fatalf("%q", got)
	}
	if got := describeConnectError(errors.New("dial tcp: refused")); got != "dial tcp: refused" {
		t.Fatalf("%q", got)
	}
}
