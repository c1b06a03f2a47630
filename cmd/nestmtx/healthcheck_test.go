package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

func envOf(kv ...string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i] == k {
				return kv[i+1], true
			}
		}
		return "", false
	}
}

func TestHealthcheck(t *testing.T) {
	var (
		mu     sync.Mutex
		status = http.StatusOK
		paths  []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.Method+" "+r.URL.Path)
		code := status
		mu.Unlock()
		w.WriteHeader(code)
		if code == http.StatusOK {
			w.Write([]byte(`{"healthy":"degraded"}` + "\n"))
		} else {
			w.Write([]byte(`{"healthy":"unhealthy"}` + "\n"))
		}
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	check := func(env func(string) (string, bool), args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := healthcheck(args, env, &out, &errb)
		return code, out.String(), errb.String()
	}

	// The port alone, as in the image's defaults: loopback is asked.
	code, out, stderr := check(envOf("NESTMTX_HTTP_ADDRESS", ":"+port))
	if code != 0 || !strings.Contains(out, "200 OK") || !strings.Contains(out, "degraded") {
		t.Fatalf("healthy daemon: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	// A flag wins over the environment, as for serve.
	code, _, stderr = check(envOf("NESTMTX_HTTP_ADDRESS", "127.0.0.1:1"), "--http-address=0.0.0.0:"+port)
	if code != 0 {
		t.Fatalf("--http-address: exit %d, stderr %q", code, stderr)
	}
	mu.Lock()
	if len(paths) != 2 || paths[0] != "GET /healthz" {
		t.Fatalf("requests %q, want two GET /healthz", paths)
	}
	status = http.StatusServiceUnavailable
	mu.Unlock()
	code, out, _ = check(envOf("NESTMTX_HTTP_ADDRESS", "127.0.0.1:"+port))
	if code != 1 || !strings.Contains(out, "503") || !strings.Contains(out, "unhealthy") {
		t.Fatalf("unhealthy daemon: exit %d, stdout %q", code, out)
	}

	srv.Close()
	code, _, stderr = check(envOf("NESTMTX_HTTP_ADDRESS", "127.0.0.1:"+port))
	if code != 1 || !strings.Contains(stderr, "nestmtx healthcheck:") {
		t.Fatalf("nothing listening: exit %d, stderr %q", code, stderr)
	}

	code, _, stderr = check(envOf("NESTMTX_HTTP_ADDRESS", "no-port"))
	if code != 1 || stderr == "" {
		t.Fatalf("bad address: exit %d, stderr %q", code, stderr)
	}

	code, out, _ = check(envOf(), "--help")
	if code != 0 || !strings.Contains(out, "Usage: nestmtx healthcheck") {
		t.Fatalf("--help: exit %d, stdout %q", code, out)
	}
}

func TestHealthzURL(t *testing.T) {
	for addr, want := range map[string]string{
		":2000":          "http://127.0.0.1:2000/healthz",
		"0.0.0.0:2000":   "http://127.0.0.1:2000/healthz",
		"[::]:2000":      "http://127.0.0.1:2000/healthz",
		"10.0.0.5:2001":  "http://10.0.0.5:2001/healthz",
		"[fd00::1]:2000": "http://[fd00::1]:2000/healthz",
		"nas.lan:2000":   "http://nas.lan:2000/healthz",
	} {
		got, err := healthzURL(addr)
		if err != nil || got != want {
			t.Errorf("healthzURL(%q) = %q, %v; want %q", addr, got, err, want)
		}
	}
	for _, addr := range []string{"2000", ":0", "host:"} {
		if got, err := healthzURL(addr); err == nil {
			t.Errorf("healthzURL(%q) = %q, want an error", addr, got)
		}
	}
}
