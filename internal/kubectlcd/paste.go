package kubectlcd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// The paste flow, for clusters whose callback the customer's browser cannot reach:
// the person pastes the address the browser was redirected to, and the plugin hands its
// query to the operator's callback (typically through kubectl port-forward), the same
// code path as a browser redirect. The plugin looks only at the HTTP status of the
// answer; what happened is read from the grant's status and Events, never from the page.

// refusalWait bounds how long a refused callback's reason is looked for in the API.
const refusalWait = 15 * time.Second

// checkCallbackEndpoint refuses what is not an http(s) URL before anything is sent.
func checkCallbackEndpoint(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--callback-endpoint %q is not an http(s) URL", raw)
	}
	return nil
}

// shownLinks are the authorization links a wait has printed. The operator renews a link
// that nears its expiry while the person waits (or types), and the customer may well
// open the newer one: its redirect is as much this wait's as the first link's.
type shownLinks struct {
	mu    sync.Mutex
	links []string
}

func (s *shownLinks) add(link string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.links = append(s.links, link)
}

func (s *shownLinks) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.links)
}

// paste takes the redirected address from stdin and hands it to the callback.
func (ao *authorizeOptions) paste(ctx context.Context, k *kube, name string, shown *shownLinks, prog *progress, submitted chan<- struct{}) error {
	prog.printf(ao.env.Streams.ErrOut, "After the login the browser is sent to the redirect URI; that page may not load.\nPaste its full address here and press Enter:\n")
	prog.hold()
	line, err := bufio.NewReader(io.LimitReader(ao.env.Streams.In, 64<<10)).ReadString('\n')
	prog.release()
	if err != nil && (!errors.Is(err, io.EOF) || strings.TrimSpace(line) == "") {
		return fmt.Errorf("reading the redirected address: %w", err)
	}
	query, err := redirectQuery(strings.TrimSpace(line), shown.all())
	if err != nil {
		return err
	}
	// What the grant said before: a refusal is told by what the callback records after it,
	// not by a failure an earlier login left standing.
	var initial grantState
	if u, err := k.grants(k.namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
		initial = stateOf(u)
	}
	since := ao.env.Clock.Now()
	close(submitted)
	status, retryAfter, err := replay(ctx, ao.callbackEndpoint, query)
	// A busy callback (its limiter, 429; an unready replica, 503) answers before it
	// claims anything: the code is unspent, and the same address may be sent again.
	for tries := 1; err == nil && busy(status) && tries < busyTries; tries++ {
		prog.printf(ao.env.Streams.ErrOut, "The operator's callback is busy (HTTP %d); sending the address again in %s.\n", status, retryAfter)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(retryAfter):
		}
		status, retryAfter, err = replay(ctx, ao.callbackEndpoint, query)
	}
	if err != nil {
		return err
	}
	if status >= 200 && status < 300 {
		prog.printf(ao.env.Streams.ErrOut, "The operator's callback accepted the login.\n")
		return nil
	}
	if busy(status) {
		return fmt.Errorf("the operator's callback stayed busy (HTTP %d, %d tries): nothing was spent; paste the address again in a moment", status, busyTries)
	}
	return fmt.Errorf("the operator refused the authorization (HTTP %d): %s", status, refusalReason(ctx, k, name, initial, since, status))
}

// busyTries bounds how often an address the callback answered busy is sent.
const busyTries = 3

func busy(status int) bool {
	return status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable
}

// redirectQuery checks a pasted address is the redirect for one of the links shown (same
// state) and returns the query to hand on. Nothing is sent for an address that is not.
func redirectQuery(pasted string, links []string) (url.Values, error) {
	u, err := url.Parse(pasted)
	if err != nil || pasted == "" {
		return nil, errors.New("that is not an address: paste the full address the browser was sent to")
	}
	q := u.Query()
	if q.Get("state") == "" || (q.Get("code") == "" && q.Get("error") == "") {
		return nil, errors.New("that address carries no state and code: paste the address the browser was sent to after logging in")
	}
	for _, link := range links {
		if want, err := url.Parse(link); err == nil && q.Get("state") == want.Query().Get("state") {
			return q, nil
		}
	}
	return nil, errors.New("that address answers another authorization link (its state differs): open the link printed above and paste where it leads")
}

// replay sends the redirect's query to the callback and returns the HTTP status, and
// how long its Retry-After asks to wait (1 s when it names none, at most 10 s). The body
// is not read: it is a page for people.
func replay(ctx context.Context, endpoint string, query url.Values) (int, time.Duration, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return 0, 0, err
	}
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		// The error names the URL, which carries the code: say where, not what.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, 0, fmt.Errorf("reaching the operator's callback at %s://%s%s (is kubectl port-forward running?): %w", u.Scheme, u.Host, u.Path, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	after := time.Second
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
		after = min(max(time.Duration(secs)*time.Second, 0), 10*time.Second)
	}
	return resp.StatusCode, after, nil
}

// refusalReason finds why the callback refused: the login it recorded on the grant
// (status.lastAuthorization, written before it answers) or a Ready condition naming an
// authorization failure, either newer than initial, what the grant said before the
// address was sent (an earlier login's failure may still stand); or the
// AuthorizationFailed Event the callback recorded since. Failing those, what the HTTP
// status says. All are written by the operator for people to read.
func refusalReason(ctx context.Context, k *kube, name string, initial grantState, since time.Time, status int) string {
	var why string
	_ = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, refusalWait, true, func(ctx context.Context) (bool, error) {
		if u, err := k.grants(k.namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
			s := stateOf(u)
			if a := s.lastAuth; newerLogin(a, initial.lastAuth) && a.Reason != cdv1.CustomerAuthorizedReason {
				why = a.Reason + ": " + oneLine(a.Message)
				return true, nil
			}
			if isFalse(s.ready) && authorizationFailureReasons[s.ready.Reason] && !sameCondition(s.ready, initial.ready) {
				why = describe(s.ready)
				return true, nil
			}
		}
		why = latestFailureEvent(ctx, k, name, since)
		return why != "", nil
	})
	switch {
	case why != "":
		return why
	case status == http.StatusNotFound:
		return "what the link was for is gone (the CDUserGrant deleted or created again): start again with `kubectl cd authorize " + name + "`"
	case status == http.StatusConflict:
		return "the link was already used, or its login is being completed; the grant's state is in `kubectl cd status " + name + "`"
	}
	return "the reason is in `kubectl describe cdusergrant " + name + "`"
}

// latestFailureEvent is the message of the newest AuthorizationFailed Event on the
// grant recorded at or after since ("" if none).
func latestFailureEvent(ctx context.Context, k *kube, name string, since time.Time) string {
	list, err := k.dynamic.Resource(eventsResource).Namespace(k.namespace).List(ctx, metav1.ListOptions{
		FieldSelector: fields.SelectorFromSet(fields.Set{
			"involvedObject.kind": grantKind,
			"involvedObject.name": name,
			"reason":              "AuthorizationFailed",
		}).String(),
	})
	if err != nil {
		return ""
	}
	var newest time.Time
	var msg string
	for i := range list.Items {
		at := eventTime(&list.Items[i])
		if at.Before(since.Add(-time.Second)) || at.Before(newest) {
			continue
		}
		newest = at
		msg, _, _ = unstructured.NestedString(list.Items[i].Object, "message")
	}
	return oneLine(msg)
}

// eventTime is when an Event last happened, whichever API recorded it.
func eventTime(e *unstructured.Unstructured) time.Time {
	latest := e.GetCreationTimestamp().Time
	for _, path := range [][]string{{"eventTime"}, {"lastTimestamp"}, {"series", "lastObservedTime"}} {
		s, _, _ := unstructured.NestedString(e.Object, path...)
		for _, layout := range []string{time.RFC3339Nano, time.RFC3339} {
			if t, err := time.Parse(layout, s); err == nil {
				if t.After(latest) {
					latest = t
				}
				break
			}
		}
	}
	return latest
}
