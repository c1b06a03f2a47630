package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

const loginUsage = `Usage: nestmtx login [flags]

Signs a Google credential in through the running daemon's HTTP API, for a
box without a browser: it prints Google's sign-in address; open it on any
device, sign in, and paste back the address the browser ends on (it starts
with the redirect URI and need not load).

The password comes from NESTMTX_LOGIN_PASSWORD, or is read from the first
line of standard input.

Flags:
`

// login runs Google's consent for a credential from the command line.
func login(args []string, lookupEnv func(string) (string, bool), stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("nestmtx login", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", "http://127.0.0.1:2000", "the daemon's HTTP address")
	username := fs.String("username", "admin", "an admin account of the daemon")
	credential := fs.Uint64("credential", 0, "the credential's id (default: the only one)")
	redirect := fs.String("redirect-uri", "http://localhost:2000/oauth/callback",
		"the redirect URI registered on the OAuth client")
	fs.Usage = func() {
		fmt.Fprint(stderr, loginUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	in := bufio.NewReader(stdin)
	password, ok := lookupEnv("NESTMTX_LOGIN_PASSWORD")
	if !ok {
		fmt.Fprintf(stderr, "password for %s: ", *username)
		password = readLine(in)
	}
	c := apiClient{base: strings.TrimRight(*base, "/"), hc: &http.Client{Timeout: time.Minute}}
	if err := c.login(*username, password); err != nil {
		fmt.Fprintf(stderr, "nestmtx login: %v\n", err)
		return 1
	}
	id := *credential
	if id == 0 {
		var list struct {
			Items []struct {
				ID          uint64 `json:"id"`
				Description string `json:"description"`
			} `json:"items"`
		}
		if err := c.do(http.MethodGet, "/api/credentials", nil, &list); err != nil {
			fmt.Fprintf(stderr, "nestmtx login: listing the credentials: %v\n", err)
			return 1
		}
		if len(list.Items) != 1 {
			fmt.Fprintf(stderr, "nestmtx login: %d credentials; name one with --credential:\n", len(list.Items))
			for _, it := range list.Items {
				fmt.Fprintf(stderr, "  %d  %s\n", it.ID, it.Description)
			}
			return 2
		}
		id = list.Items[0].ID
	}
	path := fmt.Sprintf("/api/credentials/%d", id)
	var authURL string
	if err := c.do(http.MethodPut, path, map[string]any{"redirect_uri": *redirect}, &authURL); err != nil {
		fmt.Fprintf(stderr, "nestmtx login: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "Open this address in a browser, on any device, and sign in:\n\n  %s\n\n"+
		"Then paste the address the browser ends on (it starts with %s; the page need not load):\n", authURL, *redirect)
	landed := readLine(in)
	var cred struct {
		Description string `json:"description"`
	}
	if err := c.do(http.MethodPut, path, map[string]any{"redirect_url": landed}, &cred); err != nil {
		fmt.Fprintf(stderr, "nestmtx login: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "Signed in: nestmtx can now reach the cameras of %s.\n", cred.Description)
	return 0
}

func readLine(r *bufio.Reader) string {
	line, _ := r.ReadString('\n')
	return strings.TrimSpace(line)
}

// apiClient is the few calls login makes to the daemon's HTTP API.
type apiClient struct {
	base, token string
	hc          *http.Client
}

func (c *apiClient) login(username, password string) error {
	var res struct {
		Bearer string `json:"bearer"`
	}
	if err := c.do(http.MethodPost, "/api/auth", map[string]any{"username": username, "password": password}, &res); err != nil {
		return fmt.Errorf("logging in to the daemon: %w", err)
	}
	c.token = res.Bearer
	return nil
}

func (c *apiClient) do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error.Message != "" {
			return errors.New(e.Error.Message)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return json.Unmarshal(data, out)
}
