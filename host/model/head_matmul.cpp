#include "model/head_matmul.h"

#include <algorithm>
#include <atomic>
#include <limits>

#include "core/error.h"
#include "core/parallel.h"

#ifdef TWOSTAGE_HAVE_SGEMM
// The BLAS LibTorch calls (libblas.so.3: OpenBLAS on these machines), column-major.
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc);
#endif

namespace ts {
namespace {

// Every (batch, head) matrix row-major with unit column stride, as BLAS takes it.
bool rows_dense(const torch::Tensor& t) {
  return t.dim() == 4 && t.stride(3) == 1 && t.stride(2) >= std::max<int64_t>(1, t.size(3));
}

torch::Tensor with_dense_rows(const torch::Tensor& t) { return rows_dense(t) ? t : t.contiguous(); }

#ifdef TWOSTAGE_HAVE_SGEMM
// OpenBLAS runs a product of at most this many multiply-adds on the calling thread (65536 x its
// GEMM_MULTITHREAD_THRESHOLD of 4); such products are spread over the cores here, larger ones it threads itself.
constexpr int64_t kSmallProduct = 65536 * 4;

int blas_int(int64_t value) {
  if (value > std::numeric_limits<int>::max()) fail("head_matmul: dimension {} is too large for BLAS", value);
  return static_cast<int>(value);
}

// c = op(a) op(b) for every (batch, head), all row-major; op transposes where asked.
void gemm_heads(const torch::Tensor& a, bool transpose_a, const torch::Tensor& b, bool transpose_b,
                const torch::Tensor& c) {
  const int64_t heads = c.size(1), count = c.size(0) * c.size(1);
  const int m = blas_int(c.size(2)), n = blas_int(c.size(3));
  const int k = blas_int(transpose_a ? a.size(2) : a.size(3));
  const int lda = blas_int(a.stride(2)), ldb = blas_int(b.stride(2)), ldc = blas_int(c.stride(2));
  // Row-major C = op(A) op(B) is column-major Cᵀ = op(B)ᵀ op(A)ᵀ, and a row-major matrix read column-major is its
  // transpose: so BLAS gets b first, each with its own flag.
  const char flag_b = transpose_b ? 'T' : 'N', flag_a = transpose_a ? 'T' : 'N';
  const float one = 1.0f, zero = 0.0f;
  const float* a_data = a.data_ptr<float>();
  const float* b_data = b.data_ptr<float>();
  float* c_data = c.data_ptr<float>();
  const auto body = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t batch = i / heads, head = i % heads;
      sgemm_(&flag_b, &flag_a, &n, &m, &k, &one, b_data + batch * b.stride(0) + head * b.stride(1), &ldb,
             a_data + batch * a.stride(0) + head * a.stride(1), &lda, &zero,
             c_data + batch * c.stride(0) + head * c.stride(1), &ldc);
    }
  };
  if (int64_t{m} * n * k <= kSmallProduct)
    parallel_ranges(count, 1, body);
  else
    body(0, count);
}

struct HeadMatmul : torch::autograd::Function<HeadMatmul> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& a, const torch::Tensor& b,
                               bool transpose_b, bool heads_last) {
    ctx->save_for_backward({a, b});
    ctx->saved_data["transpose_b"] = transpose_b;
    const int64_t batch = a.size(0), heads = a.size(1), m = a.size(2), n = transpose_b ? b.size(2) : b.size(3);
    const auto out = heads_last ? torch::empty({batch, m, heads, n}, a.options()).permute({0, 2, 1, 3})
                                : torch::empty({batch, heads, m, n}, a.options());
    gemm_heads(a, false, b, transpose_b, out);
    return out;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& a = saved[0];
    const auto& b = saved[1];
    const bool transpose_b = ctx->saved_data["transpose_b"].toBool();
    const auto grad = with_dense_rows(grads[0]);
    torch::Tensor grad_a, grad_b;
    // Gradients in their input's layout: those of the head views reach the projections without a copy.
    if (ctx->needs_input_grad(0)) {
      grad_a = torch::empty_like(a, torch::MemoryFormat::Preserve);
      gemm_heads(grad, false, b, !transpose_b, grad_a);  // dA = dC op(B)ᵀ
    }
    if (ctx->needs_input_grad(1)) {
      grad_b = torch::empty_like(b, torch::MemoryFormat::Preserve);
      if (transpose_b)
        gemm_heads(grad, true, a, false, grad_b);  // C = A Bᵀ: dB = dCᵀ A
      else
        gemm_heads(a, true, grad, false, grad_b);  // C = A B: dB = Aᵀ dC
    }
    return {grad_a, grad_b, torch::Tensor(), torch::Tensor()};
  }
};
#endif

std::atomic<bool> blas_enabled{true};

}  // namespace

void gemm_per_head(const torch::Tensor& a, bool transpose_a, const torch::Tensor& b, bool transpose_b,
                   const torch::Tensor& c) {
  const auto usable = [](const torch::Tensor& t) {
    return t.dim() == 4 && rows_dense(t) && t.device().is_cpu() && t.scalar_type() == torch::kFloat;
  };
  if (!usable(a) || !usable(b) || !usable(c))
    fail("gemm_per_head: operands {}, {} and {} are not float32 CPU matrices with unit column stride",
         c10::str(a.sizes()), c10::str(b.sizes()), c10::str(c.sizes()));
  const int64_t m = transpose_a ? a.size(3) : a.size(2), k = transpose_a ? a.size(2) : a.size(3);
  const int64_t k_b = transpose_b ? b.size(3) : b.size(2), n = transpose_b ? b.size(2) : b.size(3);
  if (a.size(0) != c.size(0) || a.size(1) != c.size(1) || b.size(0) != c.size(0) || b.size(1) != c.size(1) ||
      k != k_b || c.size(2) != m || c.size(3) != n)
    fail("gemm_per_head: shapes {}{}, {}{} and {} do not multiply per head", c10::str(a.sizes()),
         transpose_a ? " (transposed)" : "", c10::str(b.sizes()), transpose_b ? " (transposed)" : "",
         c10::str(c.sizes()));
  if (c.numel() == 0) return;
  if (k == 0) {
    c.zero_();
    return;
  }
#ifdef TWOSTAGE_HAVE_SGEMM
  if (blas_enabled) return gemm_heads(a, transpose_a, b, transpose_b, c);
#endif
  c.copy_(torch::matmul(transpose_a ? a.transpose(-1, -2) : a, transpose_b ? b.transpose(-1, -2) : b));
}

void set_head_matmul_blas(bool enabled) { blas_enabled = enabled; }

bool head_matmul_uses_blas(const torch::Tensor& a, const torch::Tensor& b) {
#ifdef TWOSTAGE_HAVE_SGEMM
  return blas_enabled && a.dim() == 4 && b.dim() == 4 && a.device().is_cpu() && b.device().is_cpu() &&
         a.scalar_type() == torch::kFloat && b.scalar_type() == torch::kFloat && a.numel() > 0 && b.numel() > 0;
#else
  return false;
#endif
}

torch::Tensor head_matmul(const torch::Tensor& a, const torch::Tensor& b, bool transpose_b, bool heads_last) {
  if (a.dim() != 4 || b.dim() != 4 || a.size(0) != b.size(0) || a.size(1) != b.size(1) ||
      a.size(3) != (transpose_b ? b.size(3) : b.size(2)))
    fail("head_matmul: shapes {} and {}{} do not multiply per head", c10::str(a.sizes()), c10::str(b.sizes()),
         transpose_b ? " (transposed)" : "");
#ifdef TWOSTAGE_HAVE_SGEMM
  if (head_matmul_uses_blas(a, b))
    return HeadMatmul::apply(with_dense_rows(a), with_dense_rows(b), transpose_b, heads_last);
#endif
  return torch::matmul(a, transpose_b ? b.transpose(-1, -2) : b);
}

}  // namespace ts
