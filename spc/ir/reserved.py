"""Words a generated kernel may not use for its own names: C/C++ keywords, CUDA
builtins and the macros and functions of the headers kernels include."""
from __future__ import annotations

C_WORDS = frozenset("""
alignas alignof and and_eq asm auto bitand bitor bool break case catch char char16_t char32_t
class compl const constexpr const_cast continue decltype default delete do double dynamic_cast
else enum explicit export extern false float for friend goto if inline int long mutable
namespace new noexcept not not_eq nullptr operator or or_eq private protected public register
reinterpret_cast return short signed sizeof static static_assert static_cast struct switch
template this thread_local throw true try typedef typeid typename union unsigned using virtual
void volatile wchar_t while xor xor_eq restrict main
threadIdx blockIdx blockDim gridDim warpSize min max abs fabs fabsf sqrt exp log fmin fmax
printf assert malloc free memcpy memset size_t
float2 float4 double2 int2 int4 dim3 uint half
NAN INFINITY NULL EOF
""".split())
