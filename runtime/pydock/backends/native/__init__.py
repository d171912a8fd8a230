"""The built-in, daemonless runtime: namespaces, overlayfs and cgroups driven from Python."""
