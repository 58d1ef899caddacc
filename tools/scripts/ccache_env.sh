# Sourced by the build scripts: the compile cache. Sets gan_launcher to the CMake arguments that
# route g++, clang++ and nvcc through ccache (empty with GAN_CCACHE=0 or without ccache), and
# exports what makes the cache hit across build folders and clean clones of the tree: paths
# relative to the source tree (CCACHE_BASEDIR), the working directory not hashed
# (CCACHE_NOHASHDIR), 5 GiB by default.
gan_launcher=()
if [ "${GAN_CCACHE:-1}" != 0 ] && command -v ccache >/dev/null; then
  export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
  export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}
  gan_launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
else
  gan_launcher=(-UCMAKE_CXX_COMPILER_LAUNCHER -UCMAKE_CUDA_COMPILER_LAUNCHER)
fi
