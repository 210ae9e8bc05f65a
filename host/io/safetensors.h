#pragma once
// Hugging Face safetensors files (https://github.com/huggingface/safetensors), without torch.
//
// Layout: 8 bytes little-endian header length N, N bytes of JSON header, then the data area. The header maps each
// tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data area) and may hold
// "__metadata__": {string: string}. The reader memory-maps the file and hands out views into the mapping, so loading
// a checkpoint copies each tensor once (mapping -> parameter). Every malformed input is a ts::Error naming the file
// and the problem; the checks follow the reference Rust implementation (contiguous, non-overlapping data, the whole
// data area covered, byte size == product(shape) * dtype size).
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ts::safetensors {

enum class DType { BOOL, U8, I8, I16, U16, I32, U32, I64, U64, F16, BF16, F32, F64 };

// "F32", "BF16", ... as the format spells them.
std::string_view dtype_name(DType dtype);
std::size_t dtype_size(DType dtype);
// Throws ts::Error naming the dtype and the ones known.
DType parse_dtype(std::string_view name);

// A tensor inside a mapped file: valid as long as the File (or a copy of it) is alive.
struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // not necessarily aligned to the element size
  std::size_t size_bytes = 0;

  int64_t numel() const;
};

// A validated safetensors file. Copies share the same mapping.
class File {
 public:
  // Memory-maps `path` read-only and validates the header.
  static File open(const std::filesystem::path& path);
  // Validates an in-memory image (copied); `label` names it in errors. Used by fuzzing and tests.
  static File from_bytes(std::string_view bytes, const std::string& label = "<memory>");

  const std::string& label() const { return label_; }
  // In the order of their data offsets, which is the order of the file.
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(std::string_view name) const { return find(name) != nullptr; }
  const TensorView* find(std::string_view name) const;
  // Throws ts::Error naming the file and the tensor.
  const TensorView& at(std::string_view name) const;
  std::vector<std::string> names() const;  // sorted

 private:
  struct Storage;
  File() = default;
  void parse();

  std::shared_ptr<Storage> storage_;
  std::string label_;
  std::vector<TensorView> tensors_;
  std::map<std::string, std::size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

// What to write: the data is read during write() only.
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  std::size_t size_bytes = 0;
};

// Writes a safetensors file atomically (temporary name, fsync, rename). Tensors are written in name order, the
// header is padded with spaces to a multiple of 8 bytes as the reference implementation does, and `metadata`
// becomes "__metadata__" (Hugging Face expects {"format": "pt"}). Throws ts::Error on duplicate names, a size that
// does not match dtype and shape, or an I/O failure.
void write(const std::filesystem::path& path, std::vector<TensorToWrite> tensors,
           const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// The same bytes write() would put in a file; for tests and small files.
std::string serialize(std::vector<TensorToWrite> tensors,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace ts::safetensors
