#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace ts::safetensors {

namespace {

struct DTypeInfo {
  DType dtype;
  std::string_view name;
  std::size_t size;
};

constexpr std::array<DTypeInfo, 13> kDTypes{{
    {DType::BOOL, "BOOL", 1},
    {DType::U8, "U8", 1},
    {DType::I8, "I8", 1},
    {DType::I16, "I16", 2},
    {DType::U16, "U16", 2},
    {DType::I32, "I32", 4},
    {DType::U32, "U32", 4},
    {DType::I64, "I64", 8},
    {DType::U64, "U64", 8},
    {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2},
    {DType::F32, "F32", 4},
    {DType::F64, "F64", 8},
}};

const DTypeInfo& info(DType dtype) {
  for (const auto& entry : kDTypes)
    if (entry.dtype == dtype) return entry;
  fail("unknown safetensors dtype value {}", static_cast<int>(dtype));
}

// The reference implementation refuses headers above 100 MB; a real checkpoint's header is a few hundred KB.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

std::string describe_type(const nlohmann::json& value) {
  if (value.is_number_float()) return "a floating-point number";
  if (value.is_number_integer() && !value.is_number_unsigned()) return "a negative number";
  return std::string("a JSON ") + value.type_name();
}

uint64_t read_u64_le(const unsigned char* bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | bytes[i];
  return value;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

}  // namespace

std::string_view dtype_name(DType dtype) { return info(dtype).name; }
std::size_t dtype_size(DType dtype) { return info(dtype).size; }

DType parse_dtype(std::string_view name) {
  for (const auto& entry : kDTypes)
    if (entry.name == name) return entry.dtype;
  std::string known;
  for (const auto& entry : kDTypes) known += (known.empty() ? "" : ", ") + std::string(entry.name);
  fail("unknown safetensors dtype '{}' (known: {})", name, known);
}

int64_t TensorView::numel() const {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

// Either a read-only mapping of a file or an owned copy of bytes.
struct File::Storage {
  const unsigned char* data = nullptr;
  std::size_t size = 0;
  void* mapping = nullptr;
  std::string owned;

  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage() {
    if (mapping) ::munmap(mapping, size);
  }
};

File File::open(const std::filesystem::path& path) {
  File file;
  file.label_ = path.string();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open safetensors file '{}': {}", path.string(), std::strerror(errno));
  struct stat status {};
  if (::fstat(fd, &status) != 0) {
    const int error = errno;
    ::close(fd);
    fail("cannot stat '{}': {}", path.string(), std::strerror(error));
  }
  if (!S_ISREG(status.st_mode)) {
    ::close(fd);
    fail("'{}' is not a regular file", path.string());
  }
  auto storage = std::make_shared<Storage>();
  storage->size = static_cast<std::size_t>(status.st_size);
  if (storage->size < 8) {
    ::close(fd);
    fail("'{}' is not a safetensors file: it has {} bytes, fewer than the 8-byte header length", path.string(),
         storage->size);
  }
  void* mapping = ::mmap(nullptr, storage->size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int error = errno;
  ::close(fd);  // the mapping keeps the file open
  if (mapping == MAP_FAILED) fail("cannot map '{}' into memory: {}", path.string(), std::strerror(error));
  storage->mapping = mapping;
  storage->data = static_cast<const unsigned char*>(mapping);
  file.storage_ = std::move(storage);
  file.parse();
  return file;
}

File File::from_bytes(std::string_view bytes, const std::string& label) {
  File file;
  file.label_ = label;
  auto storage = std::make_shared<Storage>();
  storage->owned.assign(bytes.data(), bytes.size());
  storage->data = reinterpret_cast<const unsigned char*>(storage->owned.data());
  storage->size = storage->owned.size();
  file.storage_ = std::move(storage);
  file.parse();
  return file;
}

void File::parse() {
  const std::string& where = label_;
  const std::size_t file_size = storage_->size;
  if (file_size < 8)
    fail("'{}' is not a safetensors file: it has {} bytes, fewer than the 8-byte header length", where, file_size);
  const uint64_t header_size = read_u64_le(storage_->data);
  if (header_size == 0) fail("'{}': the safetensors header length is 0; the file is not a safetensors file", where);
  if (header_size > kMaxHeaderBytes)
    fail("'{}': the safetensors header length {} is above the 100 MB limit; the file is corrupt or not a "
         "safetensors file",
         where, header_size);
  if (header_size > file_size - 8)
    fail("'{}': the safetensors header length {} runs past the end of the file ({} bytes); the file is truncated or "
         "not a safetensors file",
         where, header_size, file_size);

  const char* header_begin = reinterpret_cast<const char*>(storage_->data + 8);
  const std::string_view header_text(header_begin, header_size);
  if (header_text.front() != '{')
    fail("'{}': the safetensors header does not start with '{{' (it is not a JSON object)", where);

  std::vector<std::string> duplicates;
  std::set<std::string> seen_keys;
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(
        header_text.begin(), header_text.end(),
        [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
          if (depth == 1 && event == nlohmann::json::parse_event_t::key && parsed.is_string()) {
            const auto& key = parsed.get_ref<const std::string&>();
            if (!seen_keys.insert(key).second) duplicates.push_back(key);
          }
          return true;
        });
  } catch (const nlohmann::json::exception& error) {
    fail("'{}': the safetensors header is not valid JSON: {}", where, error.what());
  }
  if (!header.is_object())
    fail("'{}': the safetensors header is {}, not a JSON object", where, describe_type(header));
  if (!duplicates.empty()) fail("'{}': the safetensors header names '{}' more than once", where, duplicates.front());

  const uint64_t data_size = file_size - 8 - header_size;
  const unsigned char* data_area = storage_->data + 8 + header_size;
  struct Span {
    uint64_t begin, end;
    std::size_t tensor;
  };
  std::vector<Span> spans;

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object())
        fail("'{}': \"__metadata__\" is {}, not an object of strings", where, describe_type(entry));
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string())
          fail("'{}': \"__metadata__\".\"{}\" is {}, not a string", where, key, describe_type(value));
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object()) fail("'{}': tensor '{}' is described by {}, not an object", where, name, describe_type(entry));

    const auto dtype_field = entry.find("dtype");
    if (dtype_field == entry.end()) fail("'{}': tensor '{}' has no \"dtype\"", where, name);
    if (!dtype_field->is_string())
      fail("'{}': tensor '{}' has a \"dtype\" that is {}, not a string", where, name, describe_type(*dtype_field));
    DType dtype;
    try {
      dtype = parse_dtype(dtype_field->get_ref<const std::string&>());
    } catch (const Error& error) {
      fail("'{}': tensor '{}': {}", where, name, error.what());
    }

    const auto shape_field = entry.find("shape");
    if (shape_field == entry.end()) fail("'{}': tensor '{}' has no \"shape\"", where, name);
    if (!shape_field->is_array())
      fail("'{}': tensor '{}' has a \"shape\" that is {}, not an array", where, name, describe_type(*shape_field));
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& dim : *shape_field) {
      if (!dim.is_number_unsigned())
        fail("'{}': tensor '{}' has a shape entry that is {}, not a non-negative integer", where, name,
             describe_type(dim));
      const uint64_t value = dim.get<uint64_t>();
      if (value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail("'{}': tensor '{}' has a shape entry {} that is too large", where, name, value);
      shape.push_back(static_cast<int64_t>(value));
      overflow = overflow || __builtin_mul_overflow(numel, value, &numel);
    }
    uint64_t expected_bytes = 0;
    overflow = overflow || __builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(dtype)), &expected_bytes);
    if (overflow)
      fail("'{}': tensor '{}' has shape {} whose size overflows 64 bits", where, name, shape_string(shape));

    const auto offsets_field = entry.find("data_offsets");
    if (offsets_field == entry.end()) fail("'{}': tensor '{}' has no \"data_offsets\"", where, name);
    if (!offsets_field->is_array() || offsets_field->size() != 2)
      fail("'{}': tensor '{}' has \"data_offsets\" that is not an array [begin, end]", where, name);
    for (const auto& offset : *offsets_field)
      if (!offset.is_number_unsigned())
        fail("'{}': tensor '{}' has a data offset that is {}, not a non-negative integer", where, name,
             describe_type(offset));
    const uint64_t begin = (*offsets_field)[0].get<uint64_t>();
    const uint64_t end = (*offsets_field)[1].get<uint64_t>();
    if (end < begin) fail("'{}': tensor '{}' has data_offsets [{}, {}] that end before they begin", where, name, begin, end);
    if (end > data_size)
      fail("'{}': tensor '{}' has data_offsets [{}, {}] past the end of the data area ({} bytes); the file is "
           "truncated or corrupt",
           where, name, begin, end, data_size);
    if (end - begin != expected_bytes)
      fail("'{}': tensor '{}' is {} with shape {}, which needs {} bytes, but its data_offsets [{}, {}] hold {} bytes",
           where, name, dtype_name(dtype), shape_string(shape), expected_bytes, begin, end, end - begin);

    TensorView view;
    view.name = name;
    view.dtype = dtype;
    view.shape = std::move(shape);
    view.data = data_area + begin;
    view.size_bytes = static_cast<std::size_t>(end - begin);
    spans.push_back({begin, end, tensors_.size()});
    tensors_.push_back(std::move(view));
  }

  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  const Span* previous = nullptr;
  for (const Span& span : spans) {
    if (span.begin < covered)
      fail("'{}': tensors '{}' [{}, {}) and '{}' [{}, {}) overlap in the data area", where,
           tensors_[previous->tensor].name, previous->begin, previous->end, tensors_[span.tensor].name, span.begin,
           span.end);
    if (span.begin > covered)
      fail("'{}': {} unused bytes before tensor '{}' at offset {}; safetensors data must be contiguous", where,
           span.begin - covered, tensors_[span.tensor].name, span.begin);
    covered = span.end;
    previous = &span;
  }
  if (covered != data_size)
    fail("'{}': the tensors cover {} bytes of a {}-byte data area; the file has trailing bytes or is corrupt", where,
         covered, data_size);

  // File order, so that a loader reads the mapping front to back.
  std::vector<TensorView> ordered;
  ordered.reserve(tensors_.size());
  for (const Span& span : spans) ordered.push_back(std::move(tensors_[span.tensor]));
  tensors_ = std::move(ordered);
  for (std::size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
}

const TensorView* File::find(std::string_view name) const {
  const auto found = index_.find(name);
  return found == index_.end() ? nullptr : &tensors_[found->second];
}

const TensorView& File::at(std::string_view name) const {
  const TensorView* view = find(name);
  if (!view) fail("'{}' has no tensor named '{}'", label_, name);
  return *view;
}

std::vector<std::string> File::names() const {
  std::vector<std::string> result;
  result.reserve(index_.size());
  for (const auto& entry : index_) result.push_back(entry.first);
  return result;
}

namespace {

// Sorts `tensors` by name, checks them, and returns the padded header (without the 8-byte length).
std::string make_header(std::vector<TensorToWrite>& tensors, const std::map<std::string, std::string>& metadata) {
  std::sort(tensors.begin(), tensors.end(),
            [](const TensorToWrite& a, const TensorToWrite& b) { return a.name < b.name; });
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto& tensor = tensors[i];
    if (tensor.name.empty()) fail("cannot write a safetensors tensor with an empty name");
    if (tensor.name == "__metadata__") fail("cannot write a tensor named \"__metadata__\"");
    if (i > 0 && tensors[i - 1].name == tensor.name)
      fail("cannot write two safetensors tensors named '{}'", tensor.name);
    uint64_t numel = 1;
    for (int64_t dim : tensor.shape) {
      if (dim < 0) fail("cannot write tensor '{}': negative dimension in shape {}", tensor.name, shape_string(tensor.shape));
      numel *= static_cast<uint64_t>(dim);
    }
    const uint64_t bytes = numel * dtype_size(tensor.dtype);
    if (bytes != tensor.size_bytes)
      fail("cannot write tensor '{}': {} with shape {} needs {} bytes but {} were given", tensor.name,
           dtype_name(tensor.dtype), shape_string(tensor.shape), bytes, tensor.size_bytes);
    if (bytes > 0 && tensor.data == nullptr) fail("cannot write tensor '{}': no data", tensor.name);
    header[tensor.name] = {{"dtype", std::string(dtype_name(tensor.dtype))},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  // The reference writer pads with spaces so that the data area starts 8-byte aligned.
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

std::string length_prefix(uint64_t length) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  return bytes;
}

}  // namespace

std::string serialize(std::vector<TensorToWrite> tensors, const std::map<std::string, std::string>& metadata) {
  const std::string header = make_header(tensors, metadata);
  std::string out = length_prefix(header.size()) + header;
  for (const auto& tensor : tensors) out.append(static_cast<const char*>(tensor.data), tensor.size_bytes);
  return out;
}

void write(const std::filesystem::path& path, std::vector<TensorToWrite> tensors,
           const std::map<std::string, std::string>& metadata) {
  const std::string header = make_header(tensors, metadata);
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  std::filesystem::path temporary = path;
  temporary += ".tmp." + std::to_string(::getpid());
  FILE* file = std::fopen(temporary.c_str(), "wb");
  if (!file) fail("cannot write '{}': {}", temporary.string(), std::strerror(errno));
  const std::string prefix = length_prefix(header.size());
  bool ok = std::fwrite(prefix.data(), 1, prefix.size(), file) == prefix.size();
  ok = ok && std::fwrite(header.data(), 1, header.size(), file) == header.size();
  for (const auto& tensor : tensors) {
    if (!ok) break;
    ok = tensor.size_bytes == 0 || std::fwrite(tensor.data, 1, tensor.size_bytes, file) == tensor.size_bytes;
  }
  const int write_error = errno;
  ok = std::fflush(file) == 0 && ok;
  ok = ::fsync(::fileno(file)) == 0 && ok;
  ok = std::fclose(file) == 0 && ok;
  if (!ok) {
    std::remove(temporary.c_str());
    fail("cannot write '{}': {}", path.string(), std::strerror(write_error ? write_error : errno));
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) {
    std::remove(temporary.c_str());
    fail("cannot rename '{}' to '{}': {}", temporary.string(), path.string(), error.message());
  }
}

}  // namespace ts::safetensors
