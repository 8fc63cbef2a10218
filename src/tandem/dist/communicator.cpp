// Helpers shared by the communicator implementations.
#include "tandem/dist/communicator.h"

namespace tandem {

size_t comm_type_size(CommType t) {
  switch (t) {
    case CommType::kF32: return 4;
    case CommType::kF64: return 8;
    case CommType::kI64: return 8;
  }
  return 0;
}

}  // namespace tandem
