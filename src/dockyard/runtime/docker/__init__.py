"""The docker runtime: releases as OCI images in a registry, instances as containers.

``stack`` builds the base image from Debian packages, ``images`` turns a release into an
image and pushes it, ``registry`` speaks the registry's HTTP API, ``network`` gives each
app a network of its own, and ``runtime`` runs one container per instance behind the same
``Runtime`` interface as the local runtime. The Docker SDK speaks to Podman's
Docker-compatible socket too.
"""
