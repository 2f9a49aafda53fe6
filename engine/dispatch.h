#pragma once
// GRAFT_DISPATCH(dev, cpu_call, cuda_call): the one place an op picks its backend. In a build
// without CUDA only the CPU call is compiled.
#ifdef GRAFT_HAVE_CUDA
#define GRAFT_DISPATCH(dev, cpu_call, cuda_call) \
  do {                                           \
    if ((dev).is_cuda()) {                       \
      cuda_call;                                 \
    } else {                                     \
      cpu_call;                                  \
    }                                            \
  } while (0)
#else
#define GRAFT_DISPATCH(dev, cpu_call, cuda_call) \
  do {                                           \
    (void)(dev);                                 \
    cpu_call;                                    \
  } while (0)
#endif
