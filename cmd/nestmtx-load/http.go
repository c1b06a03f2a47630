package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// runHTTP measures the HTTP API: an authenticated GET of o.httpPath
// against an unauthenticated GET of o.httpBaseline on the same server,
// both over keep-alive connections, one per worker.
func runHTTP(o options) error {
	base := "http://" + o.httpAddr
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxIdleConns: o.concurrency, MaxIdleConnsPerHost: o.concurrency, IdleConnTimeout: time.Minute}}
	token, err := httpLogin(client, base, o)
	if err != nil {
		return err
	}
	fmt.Printf("nestmtx-load: %d workers over HTTP keep-alive, %s per phase, GET %s (authenticated) against GET %s\n",
		o.concurrency, o.duration, o.httpPath, o.httpBaseline)
	api, err := closedLoop(o, func(int) error { return httpGet(client, base+o.httpPath, token) })
	if err != nil {
		return err
	}
	api.print("api     ")
	if o.skipEcho {
		return nil
	}
	baseline, err := closedLoop(o, func(int) error { return httpGet(client, base+o.httpBaseline, "") })
	if err != nil {
		return err
	}
	baseline.print("baseline")
	fmt.Printf("ratio: api/baseline throughput %.2f, p50 latency %.2fx, p99 latency %.2fx\n",
		api.rps/baseline.rps, float64(api.p50)/float64(baseline.p50), float64(api.p99)/float64(baseline.p99))
	return nil
}

func httpLogin(client *http.Client, base string, o options) (string, error) {
	body, _ := json.Marshal(map[string]string{"username": o.apiUser, "password": o.apiPass})
	resp, err := client.Post(base+"/api/auth", "application/json", bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("login: %w (is the daemon's HTTP API at %s?)", err, base)
	}
	defer resp.Body.Close()
	var res struct {
		Bearer string `json:"bearer"`
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &res) != nil || res.Bearer == "" {
		return "", fmt.Errorf("login failed: %d %s", resp.StatusCode, b)
	}
	return res.Bearer, nil
}

// httpGet sends one GET and reads the whole answer, which must be a 200
// (the connection then goes back to the pool).
func httpGet(client *http.Client, url, token string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return nil
}
