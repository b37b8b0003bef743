package controllers

// Every permission the manager uses, in one place: controller-gen turns these markers
// into config/rbac/role.yaml, and the chart's ClusterRole is generated from that file.
// Nothing here that the code does not use; the hardened install test (test/install) runs
// the manager as the shipped ServiceAccount on an API server with
// OwnerReferencesPermissionEnforcement and fails on any forbidden request.
//
// Two groups of permissions live outside these markers, because they must be bound
// differently from the rules below (which a namespaced install grants per namespace with
// RoleBindings):
//   - leader election (its Lease and the core/v1 Event controller-runtime records on
//     it), in the manager's own namespace only: config/rbac/leader_election_role.yaml;
//   - TokenReviews and SubjectAccessReviews for the secure metrics endpoint
//     (controller-runtime's filters.WithAuthenticationAndAuthorization), which are
//     cluster-scoped and so need a ClusterRoleBinding even in a namespaced install:
//     config/rbac/metrics_auth_role.yaml.

// +kubebuilder:rbac:groups=cd.credops.io,resources=cdcredentials,verbs=get;list;watch
// +kubebuilder:rbac:groups=cd.credops.io,resources=cdusergrants,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=cd.credops.io,resources=cdcredentials/status;cdusergrants/status,verbs=get;patch

// Output Secrets carry a controller owner reference with blockOwnerDeletion, which the
// OwnerReferencesPermissionEnforcement admission plugin (OpenShift, hardened clusters)
// allows only to whoever may update the owner's finalizers.
// +kubebuilder:rbac:groups=cd.credops.io,resources=cdcredentials/finalizers;cdusergrants/finalizers,verbs=update

// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch;delete

// A namespace's own metadata, read before a token is requested for a missing output
// Secret: none is while the namespace is being deleted (namespaceGoing). A namespaced
// install's RoleBinding grants it for the namespace itself.
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get

// The controllers' and the callback's recorder (mgr.GetEventRecorder) writes events.k8s.io/v1.
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
