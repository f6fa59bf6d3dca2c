"""CryoKube control plane: CRD models, kopf handlers, manifest builders, metadata service,
console, CLI and local runner."""
