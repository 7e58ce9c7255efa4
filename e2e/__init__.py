"""End-to-end tests and the harness that runs them on a real Kubernetes cluster.

``python -m e2e.cluster up|down|status`` manages a single-node Kubernetes 1.20 built from Debian's
source package (see ``e2e/README.md``); ``python -m pytest e2e`` runs the tests, either against
that local cluster or against any cluster named by ``MAS_E2E_KUBECONFIG`` (for example kind).
"""
