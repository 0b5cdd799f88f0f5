fn main() {
    berth_cni::run(host_local::HostLocal)
}
