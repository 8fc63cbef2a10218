// The CUDA backend's factory, callable from code built without the CUDA headers (the registry).
#pragma once

#include <memory>

#include "tandem/backend/backend.h"

namespace tandem {

// Opens device 0. bf16 = true runs the matmuls on bf16 tensor cores with fp32 accumulation
// (inputs rounded to bf16; storage, master weights and optimizer state stay fp32); false keeps
// them in full fp32. Throws "[cuda] no device: ..." when no usable GPU is present.
std::unique_ptr<Backend> make_cuda_backend(bool bf16);

}  // namespace tandem
