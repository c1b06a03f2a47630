// The healthcheck command, for a container's HEALTHCHECK: the images carry
// no curl (the default one has no shell at all), so the binary asks the
// daemon itself.

package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/nestmtx/nestmtx/internal/config"
)

const healthcheckUsage = `Usage: nestmtx healthcheck [serve's flags]

GET /healthz on the daemon's HTTP address (NESTMTX_HTTP_ADDRESS, the YAML
file's http_address or --http-address, as serve finds it; 127.0.0.1 when it
names no host) and exit 0 if the daemon answers 200 (healthy or degraded),
1 otherwise: unhealthy (503), no answer within 4 s, or nothing listening.
The report is printed on standard output.
`

// healthcheckTimeout bounds the whole request; Docker's own --timeout
// (5 s in the Dockerfile) would otherwise be what ends a hung check.
const healthcheckTimeout = 4 * time.Second

// healthcheckMaxBody is what is read and printed of the report: Docker
// keeps 4 KiB of a check's output.
const healthcheckMaxBody = 3 << 10

func healthcheck(args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) int {
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" || a == "help" {
			fmt.Fprint(stdout, healthcheckUsage)
			return 0
		}
	}
	// Offline: the check needs the address only, and must not read the
	// daemon's password files (Docker runs it as the same user, but a
	// check is no reason to touch secrets).
	cfg, err := config.LoadOffline(args, lookupEnv, io.Discard)
	if err != nil {
		fmt.Fprintln(stderr, "nestmtx healthcheck:", err)
		return 1
	}
	url, err := healthzURL(cfg.HTTPAddress)
	if err != nil {
		fmt.Fprintln(stderr, "nestmtx healthcheck:", err)
		return 1
	}
	client := &http.Client{
		Timeout: healthcheckTimeout,
		// No proxy from the environment: the daemon is on this host.
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
	}
	resp, err := client.Get(url)
	if err != nil {
		fmt.Fprintln(stderr, "nestmtx healthcheck:", err)
		return 1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, healthcheckMaxBody))
	if err != nil {
		fmt.Fprintf(stderr, "nestmtx healthcheck: %s: reading the report: %v\n", url, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s %s\n", resp.Status, strings.TrimSpace(string(body)))
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	return 0
}

// healthzURL is the /healthz URL of a daemon listening on addr (host:port).
// A listener on every address is reached on loopback.
func healthzURL(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("http address %q: %w", addr, err)
	}
	if port == "" || port == "0" {
		return "", errors.New("http address " + addr + " names no port to check")
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/healthz", nil
}
