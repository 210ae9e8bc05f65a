// libFuzzer target: the safetensors reader must turn any byte string into either a validated File whose views
// lie inside the input, or a ts::Error; never a crash, a hang or an out-of-bounds read.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace st = ts::safetensors;
  try {
    const st::File file = st::File::from_bytes(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
    std::size_t covered = 0;
    volatile unsigned char sink = 0;
    for (const auto& view : file.tensors()) {
      if (static_cast<std::size_t>(view.numel()) * st::dtype_size(view.dtype) != view.size_bytes) std::abort();
      covered += view.size_bytes;
      // Touch every byte, so that AddressSanitizer sees a view reaching outside the buffer.
      const auto* bytes = static_cast<const unsigned char*>(view.data);
      for (std::size_t i = 0; i < view.size_bytes; ++i) sink = sink ^ bytes[i];
      if (file.find(view.name) != &view) std::abort();
    }
    if (covered > size) std::abort();
    // Writing back what was read must give a file that reads back the same.
    std::vector<st::TensorToWrite> tensors;
    for (const auto& view : file.tensors()) tensors.push_back({view.name, view.dtype, view.shape, view.data, view.size_bytes});
    const std::string again = st::serialize(tensors, file.metadata());
    const st::File reread = st::File::from_bytes(again, "fuzz-reread");
    if (reread.names() != file.names() || reread.metadata() != file.metadata()) std::abort();
  } catch (const ts::Error&) {
    // Rejected with a message: the expected outcome for most inputs.
  }
  return 0;
}
