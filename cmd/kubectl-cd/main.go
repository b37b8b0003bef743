// Command kubectl-cd is a kubectl plugin for cd-credentials-operator. Installed on the
// PATH it runs as `kubectl cd`.
//
//	kubectl cd authorize GRANT [-n NAMESPACE] [--callback-endpoint URL] [--wait 2m]
//
// authorize onboards a customer without an Ingress in front of the operator's callback:
// see internal/authorizecli.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/authorizecli"
)

const usage = `Usage: kubectl cd authorize GRANT [flags]

Onboards the customer of CDUserGrant GRANT through the operator's callback server when
the customer's browser cannot reach it (no Ingress). Start a port-forward first:

  kubectl -n cd-credentials-operator port-forward deploy/cd-credentials-operator 9443

then run this, open the printed link, log in as the customer, and paste back the address
the browser is sent to. The operator verifies it and exchanges the code, exactly as for a
browser redirect; no secret or token passes through this command.

Flags:
`

func main() {
	fs := flag.NewFlagSet("kubectl cd authorize", flag.ExitOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage); fs.PrintDefaults() }
	kubeconfig := fs.String("kubeconfig", "", "Path to the kubeconfig file; default: $KUBECONFIG or ~/.kube/config.")
	namespace := fs.String("n", "", "Namespace of the CDUserGrant; default: the kubeconfig context's.")
	endpoint := fs.String("callback-endpoint", "http://127.0.0.1:9443/callback", "Where the operator's callback server answers from this machine.")
	waitFor := fs.Duration("wait", 2*time.Minute, "How long to wait for the grant to become Ready afterwards; 0 does not wait.")
	if len(os.Args) < 2 || os.Args[1] != "authorize" {
		fs.Usage()
		os.Exit(2)
	}
	_ = fs.Parse(os.Args[2:])
	// Flags may follow the grant's name, as with kubectl.
	args := fs.Args()
	if len(args) == 0 {
		fs.Usage()
		os.Exit(2)
	}
	_ = fs.Parse(args[1:])
	if err := run(args[0], *kubeconfig, *namespace, *endpoint, *waitFor); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(grant, kubeconfig, namespace, endpoint string, waitFor time.Duration) error {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	cfg, err := loader.ClientConfig()
	if err != nil {
		return err
	}
	if namespace == "" {
		if namespace, _, err = loader.Namespace(); err != nil {
			return err
		}
	}
	scheme := runtime.NewScheme()
	if err := cdv1.AddToScheme(scheme); err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	opts := authorizecli.Options{Grant: types.NamespacedName{Namespace: namespace, Name: grant}, CallbackEndpoint: endpoint, Wait: waitFor}
	return authorizecli.Run(ctrl.SetupSignalHandler(), c, opts, os.Stdin, os.Stdout)
}
