"""The kopf operator; see submodules."""
