// Command kubectl-cd is the kubectl plugin of cd-credentials-operator. Installed on the
// PATH it runs as `kubectl cd`; see internal/kubectlcd, or `kubectl cd --help`.
//
// Linked (or copied) as kubectl_complete-cd beside it, the same binary is the plugin's
// completion helper, which kubectl 1.26 and later call for `kubectl cd <TAB>`.
package main

import (
	"os"

	"github.com/credops/cd-credentials-operator/internal/kubectlcd"
)

func main() {
	os.Exit(kubectlcd.Main(os.Args, kubectlcd.DefaultEnv()))
}
