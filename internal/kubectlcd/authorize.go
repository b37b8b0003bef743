package kubectlcd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// authorizeOptions are the flags of authorize and reauthorize.
type authorizeOptions struct {
	*options
	open             bool
	timeout          time.Duration
	callbackEndpoint string
	yes              bool
}

func (ao *authorizeOptions) addFlags(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&ao.open, "open", false, "Open the authorization link in a browser (xdg-open, open or rundll32).")
	cmd.Flags().DurationVar(&ao.timeout, "timeout", 15*time.Minute, "How long to wait for the customer to log in and the grant to become Ready.")
	cmd.Flags().StringVar(&ao.callbackEndpoint, "callback-endpoint", "", `For clusters whose callback the browser cannot reach: where the operator's callback answers from
this machine (e.g. http://127.0.0.1:9443/callback through kubectl port-forward). The
command then asks for the address the browser was sent to after the login and hands
it to the callback; the outcome is read from the grant's status.`)
}

func newAuthorizeCommand(o *options) *cobra.Command {
	ao := &authorizeOptions{options: o}
	cmd := &cobra.Command{
		Use:   "authorize GRANT",
		Short: "Print a CDUserGrant's authorization link and wait until the customer has logged in",
		Long: `Prints the link the customer of CDUserGrant GRANT logs in with (status.authorizationURL),
opens it with --open, and waits until the grant is Ready or says why not (for example
AuthorizationDenied, also when the customer declines a second time: the wait follows
status.lastAuthorization). Nothing secret passes through this command.`,
		Example: `  kubectl cd authorize acme --open
  kubectl -n team-a cd authorize acme --timeout 30m
  # no Ingress in front of the callback:
  kubectl -n cd-credentials-operator port-forward deploy/cd-credentials-operator 9443 &
  kubectl cd authorize acme --callback-endpoint http://127.0.0.1:9443/callback`,
		Args:              exactArgs(1, "one GRANT"),
		ValidArgsFunction: o.completeGrantNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			return ao.authorize(commandContext(cmd), args[0])
		},
	}
	ao.addFlags(cmd)
	return cmd
}

func newReauthorizeCommand(o *options) *cobra.Command {
	ao := &authorizeOptions{options: o}
	cmd := &cobra.Command{
		Use:   "reauthorize GRANT",
		Short: "Ask the operator for a new login of a CDUserGrant's customer, then wait for it",
		Long: `Asks the operator for a new authorization link for CDUserGrant GRANT (annotation
` + cdv1.ReauthorizeAnnotation + `), even while the grant is Ready: its current token keeps
rotating until the customer has logged in again. Prints the link once the operator has
published it, and waits until the new refresh token is stored and the grant is Ready,
or until the customer's login fails (status.lastAuthorization).
Asks for confirmation on a terminal; without one, --yes is required.`,
		Example: `  kubectl cd reauthorize acme
  kubectl cd reauthorize acme --yes --open`,
		Args:              exactArgs(1, "one GRANT"),
		ValidArgsFunction: o.completeGrantNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			return ao.reauthorize(commandContext(cmd), args[0])
		},
	}
	ao.addFlags(cmd)
	cmd.Flags().BoolVarP(&ao.yes, "yes", "y", false, "Do not ask for confirmation.")
	return cmd
}

func (ao *authorizeOptions) validate() error {
	if ao.timeout <= 0 {
		return usageErrorf("--timeout must be positive")
	}
	if ao.callbackEndpoint != "" {
		if err := checkCallbackEndpoint(ao.callbackEndpoint); err != nil {
			return &usageError{err}
		}
	}
	return nil
}

func (ao *authorizeOptions) authorize(ctx context.Context, name string) error {
	if err := ao.validate(); err != nil {
		return err
	}
	k, err := ao.connect()
	if err != nil {
		return err
	}
	u, err := k.getGrant(ctx, name)
	if err != nil {
		return err
	}
	st := stateOf(u)
	if isTrue(st.ready) && !isTrue(st.reauth) && st.reauthorize == "" && st.url == "" {
		fmt.Fprintf(ao.env.Streams.Out, "CDUserGrant %s/%s is already authorized and Ready (%s); `kubectl cd reauthorize %s` starts a new login.\n", k.namespace, name, describe(st.ready), name)
		return nil
	}
	return ao.wait(ctx, k, name, authorizeMode, st)
}

func (ao *authorizeOptions) reauthorize(ctx context.Context, name string) error {
	if err := ao.validate(); err != nil {
		return err
	}
	k, err := ao.connect()
	if err != nil {
		return err
	}
	if _, err := k.getGrant(ctx, name); err != nil {
		return err
	}
	if err := ao.confirm(fmt.Sprintf("Start a new authorization for CDUserGrant %s/%s? Its customer will have to log in again; the current token keeps rotating until then.", k.namespace, name)); err != nil {
		return err
	}
	u, err := requestReauthorization(ctx, k, name, ao.env.Clock.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(ao.env.Streams.ErrOut, "Requested a new authorization for CDUserGrant %s/%s.\n", k.namespace, name)
	return ao.wait(ctx, k, name, reauthorizeMode, stateOf(u))
}

// requestReauthorization sets the reauthorize annotation to now (a merge patch: it
// touches nothing else and needs no resourceVersion).
func requestReauthorization(ctx context.Context, k *kube, name string, now time.Time) (*unstructured.Unstructured, error) {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		cdv1.ReauthorizeAnnotation: now.UTC().Truncate(time.Second).Format(time.RFC3339),
	}}})
	if err != nil {
		return nil, err
	}
	u, err := k.grants(k.namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kubectl-cd"})
	if err != nil {
		return nil, explainAPIError(err, "requesting a new authorization of CDUserGrant "+name)
	}
	return u, nil
}

// errNotConfirmed: the person answered no.
var errNotConfirmed = errors.New("not confirmed: nothing was changed")

// confirm asks y/N on a terminal; without a terminal only --yes proceeds.
func (ao *authorizeOptions) confirm(question string) error {
	if ao.yes {
		return nil
	}
	if !ao.isTerminal(ao.env.Streams.In) {
		return errors.New("standard input is not a terminal, so there is no one to confirm: pass --yes to reauthorize without asking")
	}
	fmt.Fprintf(ao.env.Streams.ErrOut, "%s [y/N]: ", question)
	line, err := bufio.NewReader(io.LimitReader(ao.env.Streams.In, 1024)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return errNotConfirmed
}

// wait prints the authorization link once the grant carries one (opening it and taking
// the pasted redirect as asked), then follows the grant until the tracker decides.
func (ao *authorizeOptions) wait(ctx context.Context, k *kube, name string, mode waitMode, initial grantState) error {
	ctx, cancel := context.WithTimeout(ctx, ao.timeout)
	defer cancel()
	// Ctrl-C ends the wait cleanly (the spinner line cleared, the state said); only
	// the wait catches it, so a prompt stays interruptible the ordinary way.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	out, errOut := ao.env.Streams.Out, ao.env.Streams.ErrOut
	key := k.namespace + "/" + name
	if isFalse(initial.ready) && authorizationFailureReasons[initial.ready.Reason] {
		fmt.Fprintf(errOut, "Note: CDUserGrant %s says %s\n", key, describe(initial.ready))
	}
	prog := newProgress(errOut, ao.isTerminal(errOut), ao.env.Clock, ao.env.Clock.Now().Add(ao.timeout))
	defer prog.done()
	t := newTracker(mode, initial)
	pasted := make(chan error, 1)
	// submitted closes once a pasted address is handed to the callback, pasteDone once
	// the callback has answered it: the login it carries can make the grant Ready before
	// that answer arrives, and the person should read how the callback took it first.
	submitted, pasteDone := make(chan struct{}), make(chan struct{})
	var shown string
	links := &shownLinks{}
	last := verdict{waiting, t.awaited(initial)}
	err := watchGrant(ctx, k, name, pasted, func(s grantState) (bool, error) {
		if s.url != "" && s.url != shown && !t.loggedIn {
			ao.showLink(prog, key, s.url, shown != "")
			links.add(s.url)
			if shown == "" && ao.callbackEndpoint != "" {
				go func() {
					defer close(pasteDone)
					pasted <- ao.paste(ctx, k, name, links, prog, submitted)
				}()
			}
			shown = s.url
		}
		last = t.observe(s)
		switch last.outcome {
		case succeeded:
			return true, nil
		case failed:
			return true, fmt.Errorf("CDUserGrant %s is not authorized: %s", key, last.why)
		}
		prog.set(last.why)
		return false, nil
	})
	if err == nil {
		awaitAnswer(ctx, submitted, pasteDone)
	}
	prog.done()
	switch {
	case err == nil:
		fmt.Fprintf(out, "CDUserGrant %s is Ready: %s\n", key, last.why)
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("CDUserGrant %s is not Ready after %s (%s); run the command again to keep waiting", key, ao.timeout, last.why)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("interrupted: CDUserGrant %s is not Ready yet (%s); run the command again to keep waiting", key, last.why)
	}
	return err
}

// awaitAnswer waits, for a few seconds at most, for the callback's answer to a pasted
// address already handed to it (submitted closed; done closes with the answer); it
// returns at once when nothing was handed on (the login came through the browser, or
// the prompt still waits for a line that will not come).
func awaitAnswer(ctx context.Context, submitted, done <-chan struct{}) {
	select {
	case <-submitted:
	default:
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// showLink prints the link on stdout (and opens it); it is what the person came for.
func (ao *authorizeOptions) showLink(prog *progress, key, url string, replaced bool) {
	if replaced {
		prog.printf(ao.env.Streams.Out, "The operator published a new authorization link:\n\n  %s\n\n", url)
	} else {
		prog.printf(ao.env.Streams.Out, "Open this link in a browser and log in as the customer of CDUserGrant %s:\n\n  %s\n\n", key, url)
	}
	if !ao.open || replaced {
		return
	}
	if err := ao.env.OpenBrowser(url); err != nil {
		prog.printf(ao.env.Streams.ErrOut, "Could not open a browser (%v): open the link yourself.\n", err)
	}
}
