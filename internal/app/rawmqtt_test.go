package app

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// A few MQTT v5 packets written and read byte by byte, for what a client
// library hides: the exact reason codes and properties of acknowledgements.

func varint(n int) []byte {
	var b []byte
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func mqttString(s string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...)
}

func packet(kind byte, body []byte) []byte {
	return append(append([]byte{kind}, varint(len(body))...), body...)
}

type rawConn struct {
	net.Conn
	r *bufio.Reader
}

// readPacket returns a packet's first byte and body.
func (c *rawConn) readPacket(t *testing.T) (byte, []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	kind, err := c.r.ReadByte()
	if err != nil {
		t.Fatalf("reading a packet: %v", err)
	}
	n, mul := 0, 1
	for {
		b, err := c.r.ReadByte()
		if err != nil {
			t.Fatal(err)
		}
		n += int(b&0x7f) * mul
		mul *= 128
		if b&0x80 == 0 {
			break
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		t.Fatal(err)
	}
	return kind, body
}

type connack struct {
	reason        byte
	sessionExpiry uint32
	conn          *rawConn
}

// connectRaw logs in with MQTT v5, asking for a session that outlives the
// connection for expiry seconds (clean start off).
func connectRaw(t *testing.T, addr, user, pass, clientID string, expiry uint32) connack {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	props := append([]byte{0x11}, binary.BigEndian.AppendUint32(nil, expiry)...)
	body := append(mqttString("MQTT"), 5, 0x80|0x40, 0, 60)
	body = append(append(body, varint(len(props))...), props...)
	body = append(body, mqttString(clientID)...)
	body = append(body, mqttString(user)...)
	body = append(body, mqttString(pass)...)
	if _, err := nc.Write(packet(0x10, body)); err != nil {
		t.Fatal(err)
	}
	c := &rawConn{Conn: nc, r: bufio.NewReader(nc)}
	kind, b := c.readPacket(t)
	if kind != 0x20 || len(b) < 3 {
		t.Fatalf("not a CONNACK: %#x % x", kind, b)
	}
	ack := connack{reason: b[1], conn: c}
	for _, p := range parseProps(t, b[2:]) {
		if p.id == 0x11 {
			ack.sessionExpiry = binary.BigEndian.Uint32(p.val)
		}
	}
	return ack
}

type prop struct {
	id  byte
	val []byte
}

// parseProps reads a property block (its length first).
func parseProps(t *testing.T, b []byte) []prop {
	t.Helper()
	n, mul, i := 0, 1, 0
	for ; ; i++ {
		n += int(b[i]&0x7f) * mul
		mul *= 128
		if b[i]&0x80 == 0 {
			i++
			break
		}
	}
	b = b[i : i+n]
	var out []prop
	for len(b) > 0 {
		id := b[0]
		b = b[1:]
		var size int
		switch id {
		case 0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A:
			size = 1
		case 0x13, 0x21, 0x22, 0x23:
			size = 2
		case 0x02, 0x11, 0x18, 0x27:
			size = 4
		case 0x26: // a string pair
			k := 2 + int(binary.BigEndian.Uint16(b))
			size = k + 2 + int(binary.BigEndian.Uint16(b[k:]))
		default: // strings and binary data
			size = 2 + int(binary.BigEndian.Uint16(b))
		}
		out = append(out, prop{id: id, val: b[:size]})
		b = b[size:]
	}
	return out
}

// TestPubackIsValidMQTT5: mochi answered a QoS 1 PUBLISH with reason code
// 0x01 (not a PUBACK code) and echoed the PUBLISH's properties back, the
// authorization user property included; strict clients (Node-RED's) drop
// the connection on it.
func TestPubackIsValidMQTT5(t *testing.T) {
	a := startApp(t, nil)
	ack := connectRaw(t, a.MQTTAddr(), "admin", adminPassword, "raw-puback", 0)
	if ack.reason != 0 {
		t.Fatalf("CONNACK reason %#x", ack.reason)
	}
	props := append([]byte{0x08}, mqttString("raw/replies")...)
	props = append(append(props, 0x09), mqttString("corr-7")...)
	props = append(append(append(props, 0x26), mqttString("authorization")...), mqttString("Bearer not-a-token")...)
	body := append(mqttString("nestmtx/requests"), 0x12, 0x34)
	body = append(append(body, varint(len(props))...), props...)
	body = append(body, `{"command":"list","module":"version"}`...)
	if _, err := ack.conn.Write(packet(0x32, body)); err != nil {
		t.Fatal(err)
	}
	for {
		kind, b := ack.conn.readPacket(t)
		if kind>>4 != 4 { // the reply PUBLISH may come first
			continue
		}
		if kind != 0x40 || len(b) < 2 || b[0] != 0x12 || b[1] != 0x34 {
			t.Fatalf("PUBACK % x % x", kind, b)
		}
		if len(b) >= 3 && b[2] != 0x00 {
			t.Errorf("PUBACK reason code %#x; MQTT v5 allows 0x00 or an error (0x10, 0x80…) here", b[2])
		}
		if len(b) >= 4 {
			if ps := parseProps(t, b[3:]); len(ps) > 0 {
				t.Errorf("PUBACK carries %d properties (echoed from the PUBLISH)", len(ps))
			}
		}
		return
	}
}
