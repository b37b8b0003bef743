// Package kubectlcd is the kubectl plugin of cd-credentials-operator: `kubectl cd`.
//
// It reads the API only: the CRs' status fields, the output Secrets' metadata and
// decoded claims, and Events. It never shows a token, a refresh token or a client
// secret, and it never parses a web page: what the operator did is read from the
// CDUserGrant's status.
package kubectlcd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/utils/clock"
)

// CompletionHelperName is the name under which kubectl (1.26 and later) looks for a
// plugin's completion helper: `kubectl cd <TAB>` runs `kubectl_complete-cd __complete …`.
// A link of that name to kubectl-cd makes the binary answer as its own helper.
const CompletionHelperName = "kubectl_complete-cd"

// Env is what one run of the plugin talks to; tests replace its parts.
type Env struct {
	// Streams are stdin, stdout and stderr.
	Streams genericiooptions.IOStreams
	// Clock tells the time (relative times, the reauthorize annotation).
	Clock clock.Clock
	// IsTerminal says whether a stream is an interactive terminal.
	IsTerminal func(any) bool
	// OpenBrowser opens a URL in the user's browser.
	OpenBrowser func(url string) error
}

// options are the flags shared by every command.
type options struct {
	env    Env
	config *genericclioptions.ConfigFlags
}

// Main runs the plugin with the process's arguments and returns its exit code: 0 on
// success (and for --help), 1 on any error, which is printed as one line.
func Main(args []string, env Env) int {
	if len(args) == 0 {
		args = []string{"kubectl-cd"}
	}
	if strings.TrimSuffix(filepath.Base(args[0]), ".exe") == CompletionHelperName {
		// Called by kubectl's completion as the plugin's helper.
		args = append([]string{args[0], cobra.ShellCompRequestCmd}, args[1:]...)
	}
	root := NewCommand(env)
	root.SetArgs(args[1:])
	cmd, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	var usage *usageError
	if errors.As(err, &usage) {
		fmt.Fprintf(env.Streams.ErrOut, "error: %s\n%s", oneLine(err.Error()), shortUsage(cmd))
		return 1
	}
	fmt.Fprintf(env.Streams.ErrOut, "error: %s\n", oneLine(err.Error()))
	return 1
}

// shortUsage is the usage lines of a command and where to read more: after a typo,
// the whole flag list would bury the one line that matters.
func shortUsage(cmd *cobra.Command) string {
	var b strings.Builder
	b.WriteString("Usage:\n  " + cmd.UseLine() + "\n")
	if cmd.HasAvailableSubCommands() {
		b.WriteString("  " + cmd.CommandPath() + " [command]\n")
	}
	b.WriteString("See '" + cmd.CommandPath() + " --help' for the flags and examples.\n")
	return b.String()
}

// usageError is a mistake in the command line: it is shown with the usage.
type usageError struct{ error }

func usageErrorf(format string, a ...any) error { return &usageError{fmt.Errorf(format, a...)} }

// NewCommand builds `kubectl cd` and its subcommands.
func NewCommand(env Env) *cobra.Command {
	o := &options{env: env, config: genericclioptions.NewConfigFlags(true).WithWarningPrinter(env.Streams)}
	root := &cobra.Command{
		Use:   "kubectl-cd",
		Short: "Inspect and onboard cd-credentials-operator credentials and customer grants",
		Long: `kubectl cd shows what cd-credentials-operator is doing with your Central Dispatch
credentials (CDCredential) and customers' grants (CDUserGrant), onboards customers, and
inspects the token Secrets pods mount, without ever printing a token or a secret.`,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl cd"},
		Version:       versionLine(),
		SilenceUsage:  true,
		SilenceErrors: true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unknown command %q for %q", args[0], cmd.DisplayName())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetIn(env.Streams.In)
	root.SetOut(env.Streams.Out)
	root.SetErr(env.Streams.ErrOut)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	// Defined here so cobra does not take -v, which kubectl users know as verbosity.
	root.Flags().Bool("version", false, "Print the plugin's version and exit.")
	o.config.AddFlags(root.PersistentFlags())
	registerFlagCompletions(root, o)
	root.AddCommand(
		newStatusCommand(o),
		newAuthorizeCommand(o),
		newReauthorizeCommand(o),
		newInspectCommand(o),
		newVersionCommand(o),
	)
	for _, c := range root.Commands() {
		c.SilenceUsage, c.SilenceErrors = true, true
	}
	return root
}

// exactArgs is cobra.ExactArgs whose complaint comes with the usage.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("%s takes %s, got %d arguments", cmd.CommandPath(), what, len(args))
		}
		return nil
	}
}

// maxArgs is cobra.MaximumNArgs whose complaint comes with the usage.
func maxArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > n {
			return usageErrorf("%s takes at most %s, got %d arguments", cmd.CommandPath(), what, len(args))
		}
		return nil
	}
}

// oneLine keeps an error on one line: the API server's messages can span several.
func oneLine(s string) string {
	return terminalSafe(strings.Join(strings.Fields(s), " "))
}

// terminalSafe escapes what a terminal would act on rather than show, in text that
// holds what others wrote (annotations, condition messages, a token's claims, the API
// server's errors): C0 and C1 control characters but newline and tab, DEL, Unicode
// format characters (bidi overrides among them) and invalid UTF-8. Anyone with edit
// rights in a namespace could otherwise rewrite the lines above (hiding "Ready False"),
// set the window title, or write to the clipboard (OSC 52) of whoever runs the plugin.
// Each is shown as its \uXXXX escape. The -o json and -o yaml views escape them already.
func terminalSafe(s string) string {
	safe := func(r rune) bool {
		return r == '\n' || r == '\t' || !(unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == utf8.RuneError)
	}
	if strings.IndexFunc(s, func(r rune) bool { return !safe(r) }) < 0 {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if safe(r) {
			b.WriteRune(r)
		} else {
			fmt.Fprintf(&b, "\\u%04x", r)
		}
	}
	return b.String()
}

// terminalSafeText writes through terminalSafe what write writes: a text view, whole.
func terminalSafeText(w io.Writer, write func(io.Writer) error) error {
	var buf bytes.Buffer
	if err := write(&buf); err != nil {
		return err
	}
	_, err := io.WriteString(w, terminalSafe(buf.String()))
	return err
}

// commandContext returns the command's context, or a background one in tests that run a
// command without Execute.
func commandContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// isTerminal reports whether f is an interactive terminal, per env.
func (o *options) isTerminal(f any) bool {
	return o.env.IsTerminal != nil && o.env.IsTerminal(f)
}

// DefaultEnv is the environment of the real process.
func DefaultEnv() Env {
	return Env{
		Streams:     genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr},
		Clock:       clock.RealClock{},
		IsTerminal:  isTerminalFile,
		OpenBrowser: openBrowser,
	}
}
