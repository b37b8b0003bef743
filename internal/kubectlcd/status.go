package kubectlcd

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
)

type statusOptions struct {
	*options
	allNamespaces bool
	output        string
}

func newStatusCommand(o *options) *cobra.Command {
	so := &statusOptions{options: o}
	cmd := &cobra.Command{
		Use:   "status [NAME | cdcredential/NAME | cdusergrant/NAME]",
		Short: "Show CDCredentials and CDUserGrants with their conditions and expiry",
		Long: `Without a name: a short table of the namespace's CDCredentials and CDUserGrants (-A: of
every namespace). With a name: everything about that object: each condition, expiry,
renewal, rotations, secret, the authorization link while it waits for the customer,
and the last failure.`,
		Example: `  kubectl cd status
  kubectl cd status -A
  kubectl cd status acme
  kubectl cd status cdusergrant/acme -o yaml`,
		Args:              maxArgs(1, "one NAME"),
		ValidArgsFunction: o.completeObjectNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validateOutput(so.output); err != nil {
				return err
			}
			if len(args) == 1 {
				if so.allNamespaces {
					return usageErrorf("a NAME cannot be combined with -A: name the namespace with -n")
				}
				return so.showOne(commandContext(cmd), args[0])
			}
			return so.showAll(commandContext(cmd))
		},
	}
	cmd.Flags().BoolVarP(&so.allNamespaces, "all-namespaces", "A", false, "List the objects of every namespace.")
	cmd.Flags().StringVarP(&so.output, "output", "o", "", "Output format: json or yaml (default: a table, or the detailed view for one NAME).")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// summaryList is -o json|yaml of several objects.
type summaryList struct {
	Items []Summary `json:"items"`
}

func (so *statusOptions) showAll(ctx context.Context) error {
	k, err := so.connect()
	if err != nil {
		return err
	}
	ns := k.namespace
	if so.allNamespaces {
		ns = ""
	}
	var all []Summary
	var forbidden []error
	for _, r := range []struct {
		plural string
		ri     dynamic.ResourceInterface
	}{{"CDCredentials", k.credentials(ns)}, {"CDUserGrants", k.grants(ns)}} {
		list, err := r.ri.List(ctx, metav1.ListOptions{})
		if apierrors.IsForbidden(err) {
			// RBAC may grant one kind and not the other: show the one.
			forbidden = append(forbidden, explainAPIError(err, "listing "+r.plural))
			continue
		}
		if err != nil {
			return explainAPIError(err, "listing "+r.plural)
		}
		for i := range list.Items {
			s, err := summarize(&list.Items[i])
			if err != nil {
				return err
			}
			all = append(all, s)
		}
	}
	if len(forbidden) == 2 {
		return forbidden[0] // one line, one cause: the RBAC of both kinds
	}
	for _, err := range forbidden {
		fmt.Fprintf(so.env.Streams.ErrOut, "Not shown: %s\n", oneLine(err.Error()))
	}
	sortSummaries(all)
	if so.output != "" {
		return printStructured(so.env.Streams.Out, so.output, summaryList{Items: orEmpty(all)})
	}
	if len(all) == 0 {
		where := "in namespace " + k.namespace
		if so.allNamespaces {
			where = "in any namespace"
		}
		fmt.Fprintf(so.env.Streams.ErrOut, "No CDCredentials or CDUserGrants found %s.\n", where)
		return nil
	}
	return terminalSafeText(so.env.Streams.Out, func(w io.Writer) error { return printTable(w, all, so.allNamespaces, so.env.Clock.Now()) })
}

func orEmpty(ss []Summary) []Summary {
	if ss == nil {
		return []Summary{}
	}
	return ss
}

func (so *statusOptions) showOne(ctx context.Context, arg string) error {
	kinds, name, err := parseObjectRef(arg)
	if err != nil {
		return err
	}
	k, err := so.connect()
	if err != nil {
		return err
	}
	var found []Summary
	var forbidden []error
	for _, kind := range kinds {
		ri := k.credentials(k.namespace)
		if kind == grantKind {
			ri = k.grants(k.namespace)
		}
		u, err := ri.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && !isMissingCRD(err) {
			continue
		}
		if apierrors.IsForbidden(err) && len(kinds) > 1 {
			// A bare name looks in both kinds; RBAC may grant only one.
			forbidden = append(forbidden, explainAPIError(err, "reading "+kind+" "+name))
			continue
		}
		if err != nil {
			return explainAPIError(err, "reading "+kind+" "+name)
		}
		s, err := summarize(u)
		if err != nil {
			return err
		}
		found = append(found, s)
	}
	if len(found) == 0 {
		if len(forbidden) > 0 {
			return forbidden[0] // it may be there, unreadable
		}
		return fmt.Errorf("no %s named %q in namespace %q", strings.Join(kinds, " or "), name, k.namespace)
	}
	for _, err := range forbidden {
		fmt.Fprintf(so.env.Streams.ErrOut, "Not looked at: %s\n", oneLine(err.Error()))
	}
	switch {
	case so.output != "" && len(found) == 1:
		return printStructured(so.env.Streams.Out, so.output, found[0])
	case so.output != "":
		return printStructured(so.env.Streams.Out, so.output, summaryList{Items: found})
	}
	return terminalSafeText(so.env.Streams.Out, func(w io.Writer) error {
		for i, s := range found {
			if i > 0 {
				fmt.Fprintln(w)
			}
			if err := printDetail(w, s, so.env.Clock.Now()); err != nil {
				return err
			}
		}
		return nil
	})
}

// parseObjectRef reads NAME or KIND/NAME, KIND being any name kubectl knows the
// resource by. A bare NAME may be either kind.
func parseObjectRef(arg string) (kinds []string, name string, err error) {
	kind, name, typed := strings.Cut(arg, "/")
	if !typed {
		return []string{credentialKind, grantKind}, arg, nil
	}
	if name == "" || strings.Contains(name, "/") {
		return nil, "", usageErrorf("%q is not NAME or KIND/NAME", arg)
	}
	switch strings.ToLower(strings.TrimSuffix(kind, ".cd.credops.io")) {
	case "cdcredential", "cdcredentials", "cdcred":
		return []string{credentialKind}, name, nil
	case "cdusergrant", "cdusergrants", "cdgrant":
		return []string{grantKind}, name, nil
	}
	return nil, "", usageErrorf("unknown kind %q: use cdcredential/NAME or cdusergrant/NAME", kind)
}
