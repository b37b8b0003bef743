// Package authorizecli is `kubectl cd authorize`: customer onboarding for clusters whose
// callback server is not reachable from the customer's browser (no Ingress).
//
// It completes the login through the operator's own callback handler, the same code
// path as a browser redirect: it prints the grant's authorization URL, takes back the
// address the browser was redirected to, and replays that query to the callback
// endpoint (typically through `kubectl port-forward`). The state-signing key, the
// client secret and the customer's refresh token never leave the operator; the person
// running this sees only the one-time code, which is spent by the exchange.
package authorizecli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// Options are one run of `kubectl cd authorize`.
type Options struct {
	// Grant is the CDUserGrant to authorize.
	Grant types.NamespacedName
	// CallbackEndpoint is where the operator's callback server answers from here, e.g.
	// http://127.0.0.1:9443/callback through `kubectl port-forward`.
	CallbackEndpoint string
	// Wait is how long to wait for the grant to become Ready afterwards; 0 does not wait.
	Wait time.Duration
	// HTTPClient sends the callback request; nil means one with a 30 s timeout.
	HTTPClient *http.Client
}

// Run authorizes one grant, reading the redirected address from in and talking to the
// person on out.
func Run(ctx context.Context, c client.Client, opts Options, in io.Reader, out io.Writer) error {
	authURL, err := authorizationURL(ctx, c, opts.Grant)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Open this address in a browser and log in as the customer of CDUserGrant %s:\n\n  %s\n\n", opts.Grant, authURL)
	fmt.Fprintf(out, "The browser is then sent to the redirect URI; that page may not load. Paste its full address here and press Enter:\n")
	line, err := bufio.NewReader(io.LimitReader(in, 64<<10)).ReadString('\n')
	if err != nil && (!errors.Is(err, io.EOF) || strings.TrimSpace(line) == "") {
		return fmt.Errorf("reading the redirected address: %w", err)
	}
	query, err := redirectQuery(strings.TrimSpace(line), authURL)
	if err != nil {
		return err
	}
	if err := replay(ctx, opts, query); err != nil {
		return err
	}
	fmt.Fprintf(out, "Authorized: the operator exchanged the code and stored the customer's refresh token.\n")
	if opts.Wait <= 0 {
		return nil
	}
	return waitReady(ctx, c, opts.Grant, opts.Wait, out)
}

// authorizationURL reads the link the operator put in the grant's status.
func authorizationURL(ctx context.Context, c client.Client, key types.NamespacedName) (string, error) {
	grant := &cdv1.CDUserGrant{}
	if err := c.Get(ctx, key, grant); err != nil {
		return "", fmt.Errorf("reading CDUserGrant %s: %w", key, err)
	}
	if grant.Status.AuthorizationURL != "" {
		return grant.Status.AuthorizationURL, nil
	}
	if !meta.IsStatusConditionTrue(grant.Status.Conditions, cdv1.ReauthorizationRequiredCondition) {
		return "", fmt.Errorf("CDUserGrant %s does not need authorizing: it holds a usable refresh token", key)
	}
	return "", fmt.Errorf("CDUserGrant %s has no authorization URL in its status: is the operator's callback server on (--callback-bind-address, --callback-url)?", key)
}

// redirectQuery checks a pasted address is the redirect for this very link (same state)
// and returns the query to replay. Nothing is sent for an address that is not.
func redirectQuery(pasted, authURL string) (url.Values, error) {
	u, err := url.Parse(pasted)
	if err != nil || pasted == "" {
		return nil, errors.New("that is not an address: paste the full address the browser was sent to")
	}
	q := u.Query()
	if q.Get("state") == "" || (q.Get("code") == "" && q.Get("error") == "") {
		return nil, errors.New("that address carries no state and code: paste the address the browser was sent to after logging in")
	}
	want, _ := url.Parse(authURL)
	if q.Get("state") != want.Query().Get("state") {
		return nil, errors.New("that address answers another authorization link (its state differs): open the link printed above and paste where it leads")
	}
	return q, nil
}

// replay sends the redirect's query to the operator's callback, which verifies the
// state, exchanges the code once and stores the refresh token.
func replay(ctx context.Context, opts Options, query url.Values) error {
	u, err := url.Parse(opts.CallbackEndpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--callback-endpoint %q is not an http(s) URL", opts.CallbackEndpoint)
	}
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		// The error names the URL, which carries the code: say where, not what.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("reaching the operator's callback at %s://%s%s (is `kubectl port-forward` running?): %w", u.Scheme, u.Host, u.Path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the operator refused the authorization (HTTP %d): %s", resp.StatusCode, pageMessage(body))
	}
	return nil
}

var pageMessagePattern = regexp.MustCompile(`(?s)<p>(.*?)</p>`)

// pageMessage is the message of the callback's page (internal/onboarding), which never
// holds a token.
func pageMessage(body []byte) string {
	if m := pageMessagePattern.FindSubmatch(body); m != nil {
		return html.UnescapeString(string(m[1]))
	}
	return "no explanation given"
}

// waitReady waits for the rotation that follows a stored refresh token.
func waitReady(ctx context.Context, c client.Client, key types.NamespacedName, timeout time.Duration, out io.Writer) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		grant := &cdv1.CDUserGrant{}
		if err := c.Get(ctx, key, grant); err != nil {
			last = err.Error() // perhaps passing (a dropped connection); say so if it lasts
			return false, nil
		}
		ready := meta.FindStatusCondition(grant.Status.Conditions, cdv1.ReadyCondition)
		if ready == nil {
			return false, nil
		}
		last = ready.Reason + ": " + ready.Message
		return ready.Status == "True", nil
	})
	if err != nil {
		return fmt.Errorf("CDUserGrant %s is not Ready after %s (%s)", key, timeout, last)
	}
	fmt.Fprintf(out, "CDUserGrant %s is Ready: %s\n", key, last)
	return nil
}
