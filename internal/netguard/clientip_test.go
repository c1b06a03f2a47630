package netguard

import (
	"net"
	"testing"
)

// Every door counts logins by the same string for the same client: MQTT
// (a net.Addr), HTTP and Socket.IO (a "host:port" string).
func TestClientIPIsTheSameWhicheverDoor(t *testing.T) {
	for _, c := range []struct {
		addr net.Addr
		str  string
		want string
	}{
		{&net.TCPAddr{IP: net.IPv4(192, 168, 1, 20), Port: 51234}, "192.168.1.20:51234", "192.168.1.20"},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 443}, "[fe80::1]:443", "fe80::1"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:10.0.0.2"), Port: 1}, "10.0.0.2:1", "10.0.0.2"},
	} {
		if got := ClientIP(c.addr); got != c.want {
			t.Errorf("ClientIP(%v) = %q, want %q", c.addr, got, c.want)
		}
		if got := ClientIPOf(c.str); got != c.want {
			t.Errorf("ClientIPOf(%q) = %q, want %q", c.str, got, c.want)
		}
	}
	// Not host:port (a Unix socket, say): the address as it is.
	if got := ClientIPOf("@relay"); got != "@relay" {
		t.Errorf("ClientIPOf(%q) = %q", "@relay", got)
	}
	if got := ClientIP(nil); got != "" {
		t.Errorf("ClientIP(nil) = %q", got)
	}
}
