# Sourced by deploy/images.sh and deploy/demo-containers.sh: points podman at a containers.conf
# of our own unless the caller has one (CONTAINERS_CONF). Two settings differ from podman's
# defaults, both needed on machines like CI's: runc as the runtime (crun refuses hybrid cgroup
# hierarchies) and default ulimits within the machine's hard limits (podman's exceed them).
command -v podman >/dev/null || {
  echo "podman is needed (on Debian: apt-get install podman buildah runc)" >&2
  exit 1
}
if [ -z "${CONTAINERS_CONF:-}" ]; then
  conf_dir="${XDG_CONFIG_HOME:-$HOME/.config}/fourm"
  mkdir -p "$conf_dir"
  cat >"$conf_dir/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
EOF
  export CONTAINERS_CONF="$conf_dir/containers.conf"
fi
