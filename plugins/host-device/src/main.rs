fn main() {
    berth_cni::run(host_device::HostDevice)
}
