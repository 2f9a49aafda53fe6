# Cross-compiling graft for 64-bit Arm Linux on a Debian x86-64 machine: Debian's cross compilers
# (g++-aarch64-linux-gnu), the arm64 libraries installed next to the host's through multiarch
# (dpkg --add-architecture arm64; apt-get install libpng-dev:arm64 ...), and qemu-user to run what
# is built, so that gtest_discover_tests and ctest work as on a native build.
#
#   cmake -S . -B build-arm64 --toolchain cmake/aarch64-linux-gnu.cmake -DGRAFT_NATIVE=OFF ...
#
# scripts/cross-arm64.sh installs all of it, builds the CPU tests and runs them under qemu.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(GRAFT_CROSS_TRIPLE aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${GRAFT_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${GRAFT_CROSS_TRIPLE}-g++)

# Libraries: the cross toolchain's own (libc, libstdc++, libgomp in /usr/aarch64-linux-gnu) and
# Debian's multiarch ones (/usr/lib/aarch64-linux-gnu, headers in /usr/include, which the cross
# compiler searches by itself). lib/aarch64-linux-gnu of each root is searched before lib/, the
# host's lib/x86_64-linux-gnu never. Programs (python3 for the Python tests) are the host's.
set(CMAKE_LIBRARY_ARCHITECTURE ${GRAFT_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH /usr/${GRAFT_CROSS_TRIPLE} /)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# pkg-config, where a find module asks it, reads the arm64 .pc files only.
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/${GRAFT_CROSS_TRIPLE}/pkgconfig:/usr/share/pkgconfig)

# Test executables run under qemu-user. -L points it at the cross toolchain's dynamic loader, and
# LD_LIBRARY_PATH makes that loader take libc, libstdc++ and libgomp from the same place: without
# it the host's /etc/ld.so.cache sends it to the multiarch libc (libc6:arm64, which the -dev
# packages pull in), a different build of glibc than the loader's, and the first pthread_create
# (OpenMP's first parallel region) never returns. The remaining libraries (libpng, libturbojpeg,
# zlib) exist only under /usr/lib/aarch64-linux-gnu, where the loader then finds them.
find_program(GRAFT_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static REQUIRED)
set(CMAKE_CROSSCOMPILING_EMULATOR ${GRAFT_QEMU_AARCH64} -L /usr/${GRAFT_CROSS_TRIPLE}
    -E LD_LIBRARY_PATH=/usr/${GRAFT_CROSS_TRIPLE}/lib)
