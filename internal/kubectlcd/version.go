package kubectlcd

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/version"
)

// versionLine is what --version and `kubectl cd version --client` print.
func versionLine() string { return "kubectl-cd " + version.Get().String() }

// serverVersionTimeout bounds the look at the cluster: version must answer fast even
// when the cluster does not.
const serverVersionTimeout = 5 * time.Second

func newVersionCommand(o *options) *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the plugin's version and the cd.credops.io API versions the cluster serves",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			out := o.env.Streams.Out
			fmt.Fprintln(out, versionLine())
			if clientOnly {
				return nil
			}
			fmt.Fprintln(out, o.serverVersions())
			return nil
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "Print only the plugin's version; do not contact the cluster.")
	return cmd
}

// serverVersions describes the cluster and the operator's API versions it serves, or
// why it could not; discovery is readable by every authenticated user.
func (o *options) serverVersions() string {
	cfg, err := o.config.ToRESTConfig()
	if err != nil {
		return "cluster: unknown (" + oneLine(err.Error()) + ")"
	}
	cfg = rest.CopyConfig(cfg)
	cfg.Timeout = serverVersionTimeout
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return "cluster: unknown (" + oneLine(err.Error()) + ")"
	}
	sv, err := dc.ServerVersion()
	if err != nil {
		return "cluster: unreachable (" + oneLine(err.Error()) + ")"
	}
	groups, err := dc.ServerGroups()
	if err != nil {
		return "cluster: " + sv.GitVersion + "; API " + cdv1.GroupVersion.Group + ": unknown (" + oneLine(err.Error()) + ")"
	}
	for _, g := range groups.Groups {
		if g.Name != cdv1.GroupVersion.Group {
			continue
		}
		var served []string
		for _, v := range g.Versions {
			served = append(served, v.Version)
		}
		return fmt.Sprintf("cluster: %s; API %s served versions: %s (preferred %s)", sv.GitVersion, g.Name, strings.Join(served, ", "), g.PreferredVersion.Version)
	}
	return "cluster: " + sv.GitVersion + "; API " + cdv1.GroupVersion.Group + ": not installed"
}
