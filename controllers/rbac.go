package controllers

// Every permission the manager uses, in one place: controller-gen turns these markers
// into config/rbac/role.yaml, and the chart's ClusterRole is generated from that file.
// Nothing here that the code does not use; the hardened install test proves it is enough.

// +kubebuilder:rbac:groups=cd.credops.io,resources=cdcredentials,verbs=get;list;watch
// +kubebuilder:rbac:groups=cd.credops.io,resources=cdusergrants,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=cd.credops.io,resources=cdcredentials/status;cdusergrants/status,verbs=get;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
