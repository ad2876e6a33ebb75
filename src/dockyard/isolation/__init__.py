"""Isolation of what an app runs on this machine, below the sandbox.

- ``addresses``: each app's network namespace, veth pair and addresses, derived from its
  sandbox uid (pure, stable across restarts and reboots, no two apps alike);
- ``firewall``: the host's nftables rules for every app namespace (egress with NAT; no host
  loopback or host address, no other app, no link-local or operator-listed range) and the
  holes Docker's ``DOCKER-USER`` chain needs;
- ``network``: creating (idempotently) and removing those namespaces;
- ``cgroups``: one memory+pids cgroup per sandbox, v1 or v2, and whether the kernel killed
  something in it for memory;
- ``apps``: ``AppIsolation``, what the rest of dockyard calls: the namespace a build, an
  instance, a one-off or a postdeploy script of an app runs in, and the cleanup when the
  app is deleted.
"""
