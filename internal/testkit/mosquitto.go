package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Mosquitto is a real Mosquitto 2.x broker on a loopback port, owned by one test.
type Mosquitto struct {
	t    testing.TB
	bin  string
	conf string
	Addr string
	cmd  *exec.Cmd
	log  string
	// PersistenceDir holds the broker's database when it runs with
	// persistence, empty otherwise.
	PersistenceDir string
}

// MosquittoOptions configure StartMosquittoWith.
type MosquittoOptions struct {
	// Persistence keeps sessions, subscriptions, queued and retained
	// messages in PersistenceDir across restarts. The database is saved
	// after every change (autosave_on_changes, autosave_interval 1), so a
	// SIGKILL loses no more than Mosquitto can lose; a SIGTERM saves it.
	Persistence bool
}

// StartMosquitto starts a broker with anonymous access; Stop and Start
// restart it on the same port (a broker restart under a running client).
func StartMosquitto(t testing.TB) *Mosquitto {
	t.Helper()
	return StartMosquittoWith(t, MosquittoOptions{})
}

// StartMosquittoWith starts a broker with anonymous access and opts.
func StartMosquittoWith(t testing.TB, opts MosquittoOptions) *Mosquitto {
	t.Helper()
	bin := RequireTool(t, "mosquitto", "mosquitto")
	dir := t.TempDir()
	m := &Mosquitto{t: t, bin: bin, Addr: FreeAddr(t), conf: filepath.Join(dir, "mosquitto.conf"),
		log: filepath.Join(dir, "mosquitto.log")}
	_, port, _ := splitHostPort(m.Addr)
	conf := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\n", port)
	if opts.Persistence {
		m.PersistenceDir = filepath.Join(dir, "db")
		if err := os.Mkdir(m.PersistenceDir, 0o700); err != nil {
			t.Fatal(err)
		}
		// "user root": see StartMosquittoWithACL.
		conf += fmt.Sprintf("user root\npersistence true\npersistence_location %s/\nautosave_interval 1\nautosave_on_changes true\n",
			m.PersistenceDir)
	}
	if err := os.WriteFile(m.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	m.Start()
	t.Cleanup(m.Stop)
	return m
}

// Start launches the broker and waits for its port.
func (m *Mosquitto) Start() {
	m.t.Helper()
	logf, err := os.OpenFile(m.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		m.t.Fatal(err)
	}
	defer logf.Close()
	m.cmd = exec.Command(m.bin, "-c", m.conf)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		m.t.Fatalf("starting mosquitto: %v", err)
	}
	WaitDial(m.t, m.Addr, 10*time.Second)
}

// Stop terminates the broker (SIGTERM: with persistence it saves its
// database) and waits for it to exit.
func (m *Mosquitto) Stop() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = m.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = m.cmd.Process.Kill()
		<-done
	}
	m.cmd = nil
}

// Kill ends the broker with SIGKILL, as a crash or the OOM killer would:
// nothing is saved, connections end without a DISCONNECT.
func (m *Mosquitto) Kill() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	_ = m.cmd.Process.Kill()
	_ = m.cmd.Wait()
	m.cmd = nil
}

// Restart stops the broker (SIGKILL with kill, else SIGTERM) and starts it
// again on the same port.
func (m *Mosquitto) Restart(kill bool) {
	m.t.Helper()
	if kill {
		m.Kill()
	} else {
		m.Stop()
	}
	m.Start()
}

// Log is what the broker wrote so far, for failure messages.
func (m *Mosquitto) Log() string {
	b, _ := os.ReadFile(m.log)
	return string(b)
}

// URL is the broker's mqtt:// URL.
func (m *Mosquitto) URL() string { return "mqtt://" + m.Addr }

func splitHostPort(addr string) (string, string, error) {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[:i], addr[i+1:], nil
		}
	}
	return "", "", fmt.Errorf("no port in %q", addr)
}

// StartMosquittoWithACL starts a broker that requires a login: users maps
// usernames to passwords (hashed into a password file with
// mosquitto_passwd) and aclFile is a Mosquitto ACL file, such as the one in
// deploy/.
func StartMosquittoWithACL(t testing.TB, users map[string]string, aclFile string) *Mosquitto {
	t.Helper()
	bin := RequireTool(t, "mosquitto", "mosquitto")
	passwd := RequireTool(t, "mosquitto_passwd", "mosquitto")
	dir := t.TempDir()
	m := &Mosquitto{t: t, bin: bin, Addr: FreeAddr(t), conf: filepath.Join(dir, "mosquitto.conf"),
		log: filepath.Join(dir, "mosquitto.log")}
	pwFile := filepath.Join(dir, "passwords")
	for user, pw := range users {
		args := []string{"-b", pwFile, user, pw}
		if _, err := os.Stat(pwFile); err != nil {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command(passwd, args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
		}
	}
	acl, err := filepath.Abs(aclFile)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := splitHostPort(m.Addr)
	// "user root": started as root (CI), Mosquitto would otherwise switch to
	// the mosquitto user, which cannot read the test's private temp dir; it
	// ignores the line when not started as root.
	conf := fmt.Sprintf("user root\nlistener %s 127.0.0.1\nallow_anonymous false\npassword_file %s\nacl_file %s\n", port, pwFile, acl)
	if err := os.WriteFile(m.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	m.Start()
	t.Cleanup(m.Stop)
	return m
}
