# Included right after llama.cpp's project() when CMake is given
#   -DCMAKE_PROJECT_llama.cpp_INCLUDE=<this file>
# (see .ci/run). llama-cpp-python forces LLAMA_BUILD_COMMON ON in the CMake cache, yet its Python package
# loads only libllama and libggml (its WebAssembly build turns common off itself). A normal variable
# shadows the cache entry, so llama.cpp's common library and cpp-httplib, about 60% of the compile time,
# are not built. Should llama.cpp rename the option, this sets an unused variable: slower, never broken.
set(LLAMA_BUILD_COMMON OFF)
