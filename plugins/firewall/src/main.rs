fn main() {
    berth_cni::run(firewall::FirewallPlugin)
}
