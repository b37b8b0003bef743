package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/test/support/freeport"
)

// The client the suite registers at the sandbox, and the redirect URI of its logins.
const (
	clientID     = "chaos-login"
	clientSecret = "chaos-login-secret"
	redirectURI  = "https://app.example.com/callback"
)

// Sandbox is the cd-sandbox binary, strict single-use refresh tokens, journal on.
type Sandbox struct {
	URL string
	cmd *exec.Cmd

	mu      sync.Mutex
	journal []cdsandbox.JournalEntry
}

// StartSandbox runs bin on a free loopback port with access tokens living ttl.
func StartSandbox(ctx context.Context, bin, logDir string, ttl time.Duration) (*Sandbox, error) {
	addr, err := freeport.Addr()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(logDir, "cd-sandbox.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--listen", addr, "--access-token-ttl", ttl.String(), "--journal",
		"--client", clientID+":"+clientSecret+":authorization_code:"+redirectURI)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Sandbox{URL: "http://" + addr, cmd: cmd}
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		resp, err := http.Get(s.URL + "/.well-known/openid-configuration")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil, nil
	})
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("the sandbox did not come up: %w", err)
	}
	return s, nil
}

// Stop ends the sandbox.
func (s *Sandbox) Stop() {
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

// Login logs customer in (the authorization-code flow, straight to the sandbox, as a
// browser would) and returns their first refresh token.
func (s *Sandbox) Login(ctx context.Context, customer string) (string, error) {
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	form := url.Values{"client_id": {clientID}, "response_type": {"code"}, "redirect_uri": {redirectURI},
		"scope": {"marketplace offline_access"}, "prompt": {"consent"}, "username": {customer}, "action": {"login"}}
	resp, err := noFollow.PostForm(s.URL+"/connect/authorize", form)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		return "", fmt.Errorf("login of %s: HTTP %d without a code", customer, resp.StatusCode)
	}
	resp, err = noFollow.PostForm(s.URL+"/connect/token", url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")},
		"redirect_uri": {redirectURI}, "client_id": {clientID}, "client_secret": {clientSecret}})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.RefreshToken == "" {
		return "", fmt.Errorf("code exchange for %s: HTTP %d without a refresh token", customer, resp.StatusCode)
	}
	return body.RefreshToken, nil
}

// SyncJournal fetches the journal entries the harness has not seen yet.
func (s *Sandbox) SyncJournal(ctx context.Context) error {
	s.mu.Lock()
	after := int64(len(s.journal))
	s.mu.Unlock()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+cdsandbox.JournalPath+"?after="+strconv.FormatInt(after, 10), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var page []cdsandbox.JournalEntry
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return fmt.Errorf("reading the sandbox journal: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range page {
		if e.Seq == int64(len(s.journal))+1 {
			s.journal = append(s.journal, e)
		}
	}
	return nil
}

// Journal returns the entries synced so far.
func (s *Sandbox) Journal() []cdsandbox.JournalEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]cdsandbox.JournalEntry(nil), s.journal...)
}
