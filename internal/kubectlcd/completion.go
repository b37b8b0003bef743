package kubectlcd

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// completionTimeout keeps a <TAB> from hanging on an unreachable cluster.
const completionTimeout = 5 * time.Second

// registerFlagCompletions completes the kubeconfig flags from the kubeconfig and the
// namespace flag from the cluster.
func registerFlagCompletions(root *cobra.Command, o *options) {
	fromConfig := func(pick func(ctxName string, cluster, user string) string) cobra.CompletionFunc {
		return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			raw, err := o.config.ToRawKubeConfigLoader().RawConfig()
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			seen := map[string]bool{}
			for name, c := range raw.Contexts {
				seen[pick(name, c.Cluster, c.AuthInfo)] = true
			}
			return sortedKeys(seen), cobra.ShellCompDirectiveNoFileComp
		}
	}
	_ = root.RegisterFlagCompletionFunc("context", fromConfig(func(name, _, _ string) string { return name }))
	_ = root.RegisterFlagCompletionFunc("cluster", fromConfig(func(_, cluster, _ string) string { return cluster }))
	_ = root.RegisterFlagCompletionFunc("user", fromConfig(func(_, _, user string) string { return user }))
	_ = root.RegisterFlagCompletionFunc("namespace", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		k, err := o.connect()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
		defer cancel()
		list, err := k.metadata.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		names := make([]string, 0, len(list.Items))
		for _, n := range list.Items {
			names = append(names, n.Name)
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	})
}

// completeGrantNames completes a CDUserGrant's name.
func (o *options) completeGrantNames(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return o.names(func(k *kube) dynamic.ResourceInterface { return k.grants(k.namespace) }, ""), cobra.ShellCompDirectiveNoFileComp
}

// completeObjectNames completes NAME or KIND/NAME for status.
func (o *options) completeObjectNames(_ *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	if strings.Contains(toComplete, "/") {
		return append(
			o.names(func(k *kube) dynamic.ResourceInterface { return k.credentials(k.namespace) }, "cdcredential/"),
			o.names(func(k *kube) dynamic.ResourceInterface { return k.grants(k.namespace) }, "cdusergrant/")...,
		), cobra.ShellCompDirectiveNoFileComp
	}
	names := append(
		o.names(func(k *kube) dynamic.ResourceInterface { return k.credentials(k.namespace) }, ""),
		o.names(func(k *kube) dynamic.ResourceInterface { return k.grants(k.namespace) }, "")...,
	)
	return names, cobra.ShellCompDirectiveNoFileComp
}

// completeOutputSecretNames completes the names of the operator's output Secrets only.
func (o *options) completeOutputSecretNames(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	k, err := o.connect()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	defer cancel()
	list, err := k.metadata.Resource(secretsResource).Namespace(k.namespace).List(ctx, metav1.ListOptions{LabelSelector: cdv1.OwnerLabel})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	for _, s := range list.Items {
		names = append(names, s.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// names lists the objects of one resource in the selected namespace, with a prefix.
func (o *options) names(resource func(*kube) dynamic.ResourceInterface, prefix string) []string {
	k, err := o.connect()
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	defer cancel()
	list, err := resource(k).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil
	}
	var names []string
	for _, u := range list.Items {
		names = append(names, prefix+u.GetName())
	}
	return names
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		if k != "" {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}
