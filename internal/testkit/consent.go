package testkit

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// ConsentAsBrowser plays the user's browser in Google's consent flow: it
// opens authURL (the simulated consent page, which grants at once), checks
// that it redirects to redirect, follows that to the daemon's OAuth
// callback, and checks that the daemon reports the account authorized.
// Tests and the benchmark and soak tools all authorize credentials this
// way, through the same HTTP a person's browser would use.
func ConsentAsBrowser(authURL, redirect string) error {
	noFollow := &http.Client{Timeout: 15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(authURL)
	if err != nil {
		return fmt.Errorf("consent page: %w", err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, redirect+"?") {
		return fmt.Errorf("consent page answered %d with Location %q, want a redirect to %s", resp.StatusCode, loc, redirect)
	}
	resp, err = noFollow.Get(loc)
	if err != nil {
		return fmt.Errorf("OAuth callback: %w", err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(page, []byte("Authorized")) {
		return fmt.Errorf("OAuth callback answered %d: %s", resp.StatusCode, page)
	}
	return nil
}

// ConsentUntilRedirect runs Google's consent page as a browser would and
// returns the address Google sends the browser back to, without loading
// it: what a user on a headless box copies from the address bar when the
// redirect (http://localhost:…) cannot load.
func ConsentUntilRedirect(authURL string) (string, error) {
	noFollow := &http.Client{Timeout: 15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(authURL)
	if err != nil {
		return "", fmt.Errorf("consent page: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		return "", fmt.Errorf("consent page answered %d", resp.StatusCode)
	}
	return resp.Header.Get("Location"), nil
}
