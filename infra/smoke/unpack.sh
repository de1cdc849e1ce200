# Sourced by the GPU-host scripts: unpacks the bundle's xz'd binaries beside it
# (once) and points vbatch at them. Sets $here, the bundle's folder.
here=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
mkdir -p "$here/bin"
for f in vbatch temporal versitygw; do
  [ -x "$here/bin/$f" ] || { xz -dc "$here/$f.xz" > "$here/bin/$f"; chmod +x "$here/bin/$f"; }
done
export VBATCH_BIN_DIR="$here/bin" PYTHONUNBUFFERED=1
