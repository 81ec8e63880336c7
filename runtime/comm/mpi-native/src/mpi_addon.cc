// N-API bindings for the MPI communicator (runtime/comm/mpi.ts). Blocking MPI calls run on libuv
// worker threads (Napi::AsyncWorker) and resolve promises, so a rank's event loop keeps running
// (watchdog timers, overlap). Counts are in bytes (MPI_BYTE); reductions use MPI_FLOAT / MPI_DOUBLE.
#include <mpi.h>
#include <napi.h>

#include <functional>
#include <string>
#include <vector>

namespace {

int g_thread_level = -1;

std::string MpiErr(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, buf, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(buf, len);
}

struct Buf {
  void* data = nullptr;
  size_t bytes = 0;
  int elem = 0;
  napi_typedarray_type type = napi_uint8_array;
};

bool GetBuf(const Napi::Env& env, const Napi::Value& v, Buf* out, const char* what) {
  if (!v.IsTypedArray()) {
    Napi::TypeError::New(env, std::string(what) + ": expected a typed array").ThrowAsJavaScriptException();
    return false;
  }
  auto ta = v.As<Napi::TypedArray>();
  out->type = ta.TypedArrayType();
  out->bytes = ta.ByteLength();
  out->elem = static_cast<int>(ta.ElementSize());
  out->data = static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  return true;
}

bool GetCounts(const Napi::Env& env, const Napi::Value& v, int n, std::vector<int>* out, const char* what) {
  if (!v.IsArray()) {
    Napi::TypeError::New(env, std::string(what) + ": expected an array of byte counts").ThrowAsJavaScriptException();
    return false;
  }
  auto a = v.As<Napi::Array>();
  if (static_cast<int>(a.Length()) != n) {
    Napi::RangeError::New(env, std::string(what) + ": needs one count per rank").ThrowAsJavaScriptException();
    return false;
  }
  out->resize(n);
  for (int i = 0; i < n; i++) {
    double d = a.Get(i).As<Napi::Number>().DoubleValue();
    if (d < 0 || d > 2147483647.0) {
      Napi::RangeError::New(env, std::string(what) + ": count out of the int range").ThrowAsJavaScriptException();
      return false;
    }
    (*out)[i] = static_cast<int>(d);
  }
  return true;
}

// Runs `fn` (returns an MPI error code) on a worker thread; keeps the JS buffers alive meanwhile.
class MpiWorker : public Napi::AsyncWorker {
 public:
  MpiWorker(Napi::Env env, std::function<int()> fn, std::vector<Napi::Value> keep, std::string what)
      : Napi::AsyncWorker(env), fn_(std::move(fn)), deferred_(Napi::Promise::Deferred::New(env)), what_(std::move(what)) {
    for (auto& v : keep) refs_.push_back(Napi::Persistent(v.As<Napi::Object>()));
  }
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    int rc = fn_();
    if (rc != MPI_SUCCESS) SetError(what_ + ": " + MpiErr(rc));
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  std::function<int()> fn_;
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::ObjectReference> refs_;
  std::string what_;
};

Napi::Value Queue(const Napi::Env& env, std::function<int()> fn, std::vector<Napi::Value> keep, const char* what) {
  auto* w = new MpiWorker(env, std::move(fn), std::move(keep), what);
  auto p = w->Promise();
  w->Queue();
  return p;
}

int WorldSize() {
  int s = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

bool CheckInit(const Napi::Env& env) {
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited) Napi::Error::New(env, "MPI is not initialised: call init() first").ThrowAsJavaScriptException();
  return inited != 0;
}

Napi::Value Init(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited) {
    int provided = 0;
    int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
    if (rc != MPI_SUCCESS) {
      Napi::Error::New(env, "MPI_Init_thread: " + MpiErr(rc)).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    g_thread_level = provided;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  char ver[MPI_MAX_LIBRARY_VERSION_STRING];
  int vlen = 0;
  MPI_Get_library_version(ver, &vlen);
  auto o = Napi::Object::New(env);
  o.Set("rank", rank);
  o.Set("size", size);
  o.Set("threadMultiple", g_thread_level >= MPI_THREAD_MULTIPLE);
  o.Set("threadLevel", g_thread_level);
  o.Set("library", std::string(ver, vlen > 0 ? vlen - (ver[vlen - 1] == '\n' ? 1 : 0) : 0));
  return o;
}

Napi::Value Alltoallv(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  if (!CheckInit(env)) return env.Undefined();
  int n = WorldSize();
  Buf s, r;
  std::vector<int> sc, rc;
  if (!GetBuf(env, info[0], &s, "alltoallv send") || !GetCounts(env, info[1], n, &sc, "alltoallv sendCounts") ||
      !GetBuf(env, info[2], &r, "alltoallv recv") || !GetCounts(env, info[3], n, &rc, "alltoallv recvCounts"))
    return env.Undefined();
  std::vector<int> sd(n), rd(n);
  long long st = 0, rt = 0;
  for (int i = 0; i < n; i++) {
    sd[i] = static_cast<int>(st);
    rd[i] = static_cast<int>(rt);
    st += sc[i];
    rt += rc[i];
  }
  if (st > static_cast<long long>(s.bytes) || rt > static_cast<long long>(r.bytes) || st > 2147483647LL || rt > 2147483647LL) {
    Napi::RangeError::New(env, "alltoallv: counts exceed the buffers (or 2 GiB)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Queue(
      env,
      [s, r, sc, rc, sd, rd]() {
        return MPI_Alltoallv(s.data, sc.data(), sd.data(), MPI_BYTE, r.data, rc.data(), rd.data(), MPI_BYTE, MPI_COMM_WORLD);
      },
      {info[0], info[2]}, "MPI_Alltoallv");
}

Napi::Value AllreduceSum(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  if (!CheckInit(env)) return env.Undefined();
  Buf b;
  if (!GetBuf(env, info[0], &b, "allreduceSum")) return env.Undefined();
  MPI_Datatype t;
  if (b.type == napi_float32_array) t = MPI_FLOAT;
  else if (b.type == napi_float64_array) t = MPI_DOUBLE;
  else {
    Napi::TypeError::New(env, "allreduceSum: Float32Array or Float64Array expected").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int count = static_cast<int>(b.bytes / b.elem);
  return Queue(
      env, [b, t, count]() { return MPI_Allreduce(MPI_IN_PLACE, b.data, count, t, MPI_SUM, MPI_COMM_WORLD); }, {info[0]},
      "MPI_Allreduce");
}

Napi::Value Allgatherv(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  if (!CheckInit(env)) return env.Undefined();
  int n = WorldSize();
  Buf s, r;
  std::vector<int> rc;
  if (!GetBuf(env, info[0], &s, "allgatherv send") || !GetBuf(env, info[1], &r, "allgatherv recv") ||
      !GetCounts(env, info[2], n, &rc, "allgatherv counts"))
    return env.Undefined();
  std::vector<int> rd(n);
  long long t = 0;
  for (int i = 0; i < n; i++) {
    rd[i] = static_cast<int>(t);
    t += rc[i];
  }
  if (t > static_cast<long long>(r.bytes)) {
    Napi::RangeError::New(env, "allgatherv: counts exceed the recv buffer").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int sc = static_cast<int>(s.bytes);
  return Queue(
      env, [s, r, sc, rc, rd]() { return MPI_Allgatherv(s.data, sc, MPI_BYTE, r.data, rc.data(), rd.data(), MPI_BYTE, MPI_COMM_WORLD); },
      {info[0], info[1]}, "MPI_Allgatherv");
}

Napi::Value Sendrecv(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  if (!CheckInit(env)) return env.Undefined();
  Buf s, r;
  if (!GetBuf(env, info[0], &s, "sendrecv send") || !GetBuf(env, info[2], &r, "sendrecv recv")) return env.Undefined();
  int dest = info[1].As<Napi::Number>().Int32Value();
  int src = info[3].As<Napi::Number>().Int32Value();
  int tag = info.Length() > 4 ? info[4].As<Napi::Number>().Int32Value() : 0;
  int sb = static_cast<int>(s.bytes), rb = static_cast<int>(r.bytes);
  return Queue(
      env,
      [s, r, sb, rb, dest, src, tag]() {
        MPI_Status st;
        int rc = MPI_Sendrecv(s.data, sb, MPI_BYTE, dest, tag, r.data, rb, MPI_BYTE, src, tag, MPI_COMM_WORLD, &st);
        if (rc != MPI_SUCCESS) return rc;
        int got = 0;
        MPI_Get_count(&st, MPI_BYTE, &got);
        return got == rb ? MPI_SUCCESS : MPI_ERR_TRUNCATE;
      },
      {info[0], info[2]}, "MPI_Sendrecv");
}

Napi::Value Send(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  if (!CheckInit(env)) return env.Undefined();
  Buf s;
  if (!GetBuf(env, info[0], &s, "send")) return env.Undefined();
  int dest = info[1].As<Napi::Number>().Int32Value();
  int tag = info.Length() > 2 ? info[2].As<Napi::Number>().Int32Value() : 0;
  int sb = static_cast<int>(s.bytes);
  return Queue(env, [s, sb, dest, tag]() { return MPI_Send(s.data, sb, MPI_BYTE, dest, tag, MPI_COMM_WORLD); }, {info[0]}, "MPI_Send");
}

Napi::Value Recv(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  if (!CheckInit(env)) return env.Undefined();
  Buf r;
  if (!GetBuf(env, info[0], &r, "recv")) return env.Undefined();
  int src = info[1].As<Napi::Number>().Int32Value();
  int tag = info.Length() > 2 ? info[2].As<Napi::Number>().Int32Value() : 0;
  int rb = static_cast<int>(r.bytes);
  return Queue(
      env,
      [r, rb, src, tag]() {
        MPI_Status st;
        int rc = MPI_Recv(r.data, rb, MPI_BYTE, src, tag, MPI_COMM_WORLD, &st);
        if (rc != MPI_SUCCESS) return rc;
        int got = 0;
        MPI_Get_count(&st, MPI_BYTE, &got);
        return got == rb ? MPI_SUCCESS : MPI_ERR_TRUNCATE;
      },
      {info[0]}, "MPI_Recv");
}

Napi::Value Barrier(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  if (!CheckInit(env)) return env.Undefined();
  return Queue(env, []() { return MPI_Barrier(MPI_COMM_WORLD); }, {}, "MPI_Barrier");
}

Napi::Value Abort(const Napi::CallbackInfo& info) {
  int code = info.Length() > 0 ? info[0].As<Napi::Number>().Int32Value() : 1;
  int inited = 0;
  MPI_Initialized(&inited);
  if (inited) MPI_Abort(MPI_COMM_WORLD, code);
  return info.Env().Undefined();
}

Napi::Value Finalize(const Napi::CallbackInfo& info) {
  int inited = 0, fin = 0;
  MPI_Initialized(&inited);
  MPI_Finalized(&fin);
  if (inited && !fin) MPI_Finalize();
  return info.Env().Undefined();
}

Napi::Value Wtime(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), MPI_Wtime()); }

Napi::Object Module(Napi::Env env, Napi::Object exports) {
  exports.Set("init", Napi::Function::New(env, Init));
  exports.Set("alltoallv", Napi::Function::New(env, Alltoallv));
  exports.Set("allreduceSum", Napi::Function::New(env, AllreduceSum));
  exports.Set("allgatherv", Napi::Function::New(env, Allgatherv));
  exports.Set("sendrecv", Napi::Function::New(env, Sendrecv));
  exports.Set("send", Napi::Function::New(env, Send));
  exports.Set("recv", Napi::Function::New(env, Recv));
  exports.Set("barrier", Napi::Function::New(env, Barrier));
  exports.Set("abort", Napi::Function::New(env, Abort));
  exports.Set("finalize", Napi::Function::New(env, Finalize));
  exports.Set("wtime", Napi::Function::New(env, Wtime));
  return exports;
}

}  // namespace

NODE_API_MODULE(ditforge_mpi, Module)
