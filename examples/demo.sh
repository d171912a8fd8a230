#!/usr/bin/env bash
# A short tour of the pydock CLI on the built-in engine (needs root and busybox-static).
#
#   sudo examples/demo.sh
#
# It uses a throw-away store (PYDOCK_STORE) and removes it at the end.
set -euo pipefail

BUSYBOX=$(command -v busybox || echo /bin/busybox)
if [ ! -x "$BUSYBOX" ] || ! "$BUSYBOX" --list >/dev/null 2>&1; then
    echo "demo: needs a static busybox: apt-get install busybox-static" >&2
    exit 1
fi
PYDOCK=${PYDOCK:-pydock}
WORK=$(mktemp -d /tmp/pydock-demo.XXXXXX)
export PYDOCK_STORE="$WORK/store"
cleanup() {
    $PYDOCK rm -f web >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

# A root filesystem: static busybox plus its applet links, and a user.
mkdir -p "$WORK/rootfs/bin" "$WORK/rootfs/etc" "$WORK/rootfs/tmp" "$WORK/rootfs/www"
cp "$BUSYBOX" "$WORK/rootfs/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$WORK/rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/www:/bin/sh\n' > "$WORK/rootfs/etc/passwd"
printf 'root:x:0:\nwww:x:33:\n' > "$WORK/rootfs/etc/group"
echo 'hello from the image' > "$WORK/rootfs/www/index.html"

step sh -c "tar -C '$WORK/rootfs' -c . | $PYDOCK import --change 'CMD [\"sh\"]' \
    --change 'ENV GREETING=hi' - demo/busybox:1.0"
step $PYDOCK images
step $PYDOCK run --rm demo/busybox:1.0 sh -c 'echo "$GREETING from $(hostname)"; ps'
step $PYDOCK run --rm -u www demo/busybox:1.0 id
step $PYDOCK run --rm -m 16m demo/busybox:1.0 sh -c 'head -c 64m /dev/zero | tail > /dev/null' \
    || echo "exit status $? (the memory limit killed it)"

echo
echo "# image vs container: edit a file in a running container, then start afresh"
step $PYDOCK run -d --name web demo/busybox:1.0 httpd -f -p 8080 -h /www
step $PYDOCK exec web sh -c 'echo edited > /www/index.html; cat /www/index.html'
step $PYDOCK diff web
step $PYDOCK rm -f web
step $PYDOCK run --rm demo/busybox:1.0 cat /www/index.html

echo
echo "# commit a container's changes as a new image"
step $PYDOCK run --name seed demo/busybox:1.0 sh -c 'echo seeded > /data.txt'
step $PYDOCK commit -c 'CMD ["cat", "/data.txt"]' seed demo/seeded
step $PYDOCK rm seed
step $PYDOCK run --rm demo/seeded
step $PYDOCK ps -a
echo
echo "demo done"
