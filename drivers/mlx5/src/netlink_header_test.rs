//! The netlink constants and message layout of [`super`] against the kernel's
//! own headers (`<linux/netlink.h>`, `<linux/rtnetlink.h>`,
//! `<linux/if_link.h>`, `<linux/neighbour.h>`, `<linux/if.h>`,
//! `<rdma/rdma_netlink.h>`, from linux-libc-dev): a C program prints each
//! constant, builds the RDMA netlink requests the port sends with the header's
//! structs and macros (`struct nlmsghdr`, `struct nlattr`, `NLMSG_ALIGN`,
//! `NLA_HDRLEN`, `RDMA_NL_GET_TYPE`), and builds the kernel's answers; ours
//! must be the same bytes and must read those answers.
#![deny(unsafe_code)]

use std::collections::HashMap;

use super::*;
use crate::c_program::CProgram;
use crate::layout_test::c_named;

/// (C expression, our value).
fn constants() -> Vec<(&'static str, i64)> {
    let mut v = Vec::new();
    // RDMA netlink: the IB port of an interface.
    v.extend(c_named!(i64;
        NETLINK_RDMA, RDMA_NL_NLDEV, RDMA_NLDEV_CMD_GET, RDMA_NLDEV_CMD_PORT_GET,
        RDMA_NLDEV_ATTR_DEV_INDEX, RDMA_NLDEV_ATTR_DEV_NAME, RDMA_NLDEV_ATTR_PORT_INDEX,
        RDMA_NLDEV_ATTR_NDEV_INDEX
    ));
    // Netlink framing.
    v.extend(c_named!(i64;
        NLMSG_HDRLEN, NLMSG_ERROR, NLMSG_DONE, NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK,
        NLM_F_DUMP, NLM_F_EXCL, NLM_F_CREATE
    ));
    v.extend([
        ("sizeof(struct nlmsghdr)", NLMSG_HDRLEN as i64),
        ("offsetof(struct nlmsghdr, nlmsg_len)", 0),
        ("offsetof(struct nlmsghdr, nlmsg_type)", 4),
        ("offsetof(struct nlmsghdr, nlmsg_flags)", 6),
        ("offsetof(struct nlmsghdr, nlmsg_seq)", 8),
        ("offsetof(struct nlmsghdr, nlmsg_pid)", 12),
        ("NLA_HDRLEN", 4),
        ("offsetof(struct nlattr, nla_len)", 0),
        ("offsetof(struct nlattr, nla_type)", 2),
        ("NLA_ALIGNTO", 4),
        ("NLMSG_ALIGNTO", 4),
        ("(uint16_t)NLA_TYPE_MASK", NLA_TYPE_MASK as i64),
        ("sizeof(struct nlmsgerr) >= 4", 1),
        ("offsetof(struct nlmsgerr, error)", 0),
    ]);
    // rtnetlink: FDB entries, IFF_PROMISC, VF trust.
    v.extend(c_named!(i64;
        RTM_NEWLINK, RTM_GETLINK, RTM_NEWNEIGH, RTM_DELNEIGH, AF_BRIDGE, AF_UNSPEC, NDA_LLADDR,
        NTF_SELF, NUD_NOARP, NUD_PERMANENT, IFF_PROMISC, IFLA_VFINFO_LIST, IFLA_EXT_MASK,
        IFLA_VF_INFO, IFLA_VF_TRUST, RTEXT_FILTER_VF
    ));
    v.extend([
        ("sizeof(struct ifinfomsg)", 16),
        ("offsetof(struct ifinfomsg, ifi_index)", 4),
        ("offsetof(struct ifinfomsg, ifi_flags)", 8),
        ("offsetof(struct ifinfomsg, ifi_change)", 12),
        ("sizeof(struct ndmsg)", 12),
        ("offsetof(struct ndmsg, ndm_ifindex)", 4),
        ("offsetof(struct ndmsg, ndm_state)", 8),
        ("offsetof(struct ndmsg, ndm_flags)", 10),
        ("sizeof(struct ifla_vf_trust)", 8),
        ("offsetof(struct ifla_vf_trust, setting)", 4),
    ]);
    v
}

/// The C program: `C <expr> <value>` for each constant, then `M <name> <hex>`
/// for each message it builds with the header's structs and macros.
fn program(constants: &[(&str, i64)]) -> String {
    let mut s = String::from(
        r#"#include <stdio.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/if.h>
#include <rdma/rdma_netlink.h>

static unsigned char buf[4096];
static size_t len;

static struct nlmsghdr *start(uint16_t type, uint16_t flags)
{
	struct nlmsghdr *h = (struct nlmsghdr *)(buf + len);
	memset(h, 0, NLMSG_HDRLEN);
	h->nlmsg_len = NLMSG_HDRLEN;
	h->nlmsg_type = type;
	h->nlmsg_flags = flags;
	h->nlmsg_seq = 1;
	return h;
}

static void put(struct nlmsghdr *h, uint16_t type, const void *data, uint16_t n)
{
	struct nlattr *a = (struct nlattr *)((unsigned char *)h + NLMSG_ALIGN(h->nlmsg_len));
	a->nla_type = type;
	a->nla_len = NLA_HDRLEN + n;
	memset((unsigned char *)a + NLA_HDRLEN, 0, NLA_ALIGN(n));
	memcpy((unsigned char *)a + NLA_HDRLEN, data, n);
	h->nlmsg_len = NLMSG_ALIGN(h->nlmsg_len) + NLA_ALIGN(a->nla_len);
}

static void put_u32(struct nlmsghdr *h, uint16_t type, uint32_t v)
{
	put(h, type, &v, sizeof v);
}

static void end(struct nlmsghdr *h)
{
	len += NLMSG_ALIGN(h->nlmsg_len);
}

static void done(void)
{
	struct nlmsghdr *h = start(NLMSG_DONE, NLM_F_MULTI);
	int zero = 0;
	memcpy(NLMSG_DATA(h), &zero, sizeof zero);
	h->nlmsg_len = NLMSG_LENGTH(sizeof zero);
	end(h);
}

static void print(const char *name)
{
	printf("M %s ", name);
	for (size_t i = 0; i < len; i++)
		printf("%02x", buf[i]);
	printf("\n");
	len = 0;
}

static void device(uint32_t index, const char *name)
{
	struct nlmsghdr *h = start(RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, RDMA_NLDEV_CMD_GET), NLM_F_MULTI);
	put_u32(h, RDMA_NLDEV_ATTR_DEV_INDEX, index);
	put(h, RDMA_NLDEV_ATTR_DEV_NAME, name, strlen(name) + 1);
	put(h, RDMA_NLDEV_ATTR_FW_VERSION, "16.35.1012", 11);
	end(h);
}

static void port(uint32_t dev, uint32_t port, uint32_t ifindex, const char *ifname)
{
	struct nlmsghdr *h = start(RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, RDMA_NLDEV_CMD_PORT_GET), NLM_F_MULTI);
	uint8_t state = 4;
	put_u32(h, RDMA_NLDEV_ATTR_DEV_INDEX, dev);
	put(h, RDMA_NLDEV_ATTR_DEV_NAME, "mlx5_bond_0", 12);
	put_u32(h, RDMA_NLDEV_ATTR_PORT_INDEX, port);
	put(h, RDMA_NLDEV_ATTR_PORT_STATE, &state, sizeof state);
	put(h, RDMA_NLDEV_ATTR_RES_SUMMARY | NLA_F_NESTED, "", 0);
	put_u32(h, RDMA_NLDEV_ATTR_NDEV_INDEX, ifindex);
	put(h, RDMA_NLDEV_ATTR_NDEV_NAME, ifname, strlen(ifname) + 1);
	end(h);
}

int main(void)
{
	struct nlmsghdr *h;
"#,
    );
    for (expr, _) in constants {
        s.push_str(&format!(
            "\tprintf(\"C %s %lld\\n\", \"{expr}\", (long long)({expr}));\n"
        ));
    }
    s.push_str(
        r#"
	/* The requests the port sends. */
	h = start(RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, RDMA_NLDEV_CMD_GET), NLM_F_REQUEST | NLM_F_DUMP);
	end(h);
	print("get");
	h = start(RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, RDMA_NLDEV_CMD_PORT_GET), NLM_F_REQUEST | NLM_F_DUMP);
	put_u32(h, RDMA_NLDEV_ATTR_DEV_INDEX, 4);
	end(h);
	print("port_get");

	/* The kernel's answers: two devices; device 4's two ports. */
	device(3, "mlx5_0");
	device(4, "mlx5_bond_0");
	done();
	print("devices");
	port(4, 1, 8, "ens1f0");
	port(4, 2, 9, "ens1f1");
	done();
	print("ports");
	return 0;
}
"#,
    );
    s
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn netlink_constants_and_messages_match_the_kernel_headers() {
    let Some(c) = CProgram::new(
        "netlink",
        Vec::new(),
        "rdma/rdma_netlink.h",
        "linux-libc-dev",
        "the netlink constants and messages with the kernel's headers",
    ) else {
        return;
    };
    let constants = constants();
    let out = c.run("netlink", &program(&constants));
    let mut from_c: HashMap<String, i64> = HashMap::new();
    let mut messages: HashMap<String, Vec<u8>> = HashMap::new();
    for line in out.lines() {
        let (kind, rest) = line.split_at(2);
        let (name, value) = rest.rsplit_once(' ').expect("name value");
        match kind {
            "C " => {
                from_c.insert(name.to_string(), value.parse().expect("a number"));
            }
            "M " => {
                messages.insert(name.to_string(), hex(value));
            }
            _ => panic!("unexpected line {line:?}"),
        }
    }
    let wrong: Vec<String> = constants
        .iter()
        .filter(|(e, ours)| from_c.get(*e) != Some(ours))
        .map(|(e, ours)| format!("{e}: the headers say {:?}, ours {ours}", from_c.get(*e)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} netlink constants differ from the kernel's headers:\n{}",
        wrong.len(),
        constants.len(),
        wrong.join("\n")
    );
    // The requests, byte for byte (RDMA_NL_GET_TYPE composes the type).
    assert_eq!(
        rdma_request(RDMA_NLDEV_CMD_GET, None),
        messages["get"],
        "RDMA_NLDEV_CMD_GET dump request"
    );
    assert_eq!(
        rdma_request(RDMA_NLDEV_CMD_PORT_GET, Some(4)),
        messages["port_get"],
        "RDMA_NLDEV_CMD_PORT_GET dump request of device 4"
    );
    // The answers, as the kernel lays them out, with attributes we skip
    // (strings, a u8, a nested one with NLA_F_NESTED set).
    assert_eq!(
        rdma_dev_index(&messages["devices"], "mlx5_bond_0").unwrap(),
        Some(4)
    );
    assert_eq!(
        rdma_dev_index(&messages["devices"], "mlx5_0").unwrap(),
        Some(3)
    );
    assert_eq!(
        rdma_dev_index(&messages["devices"], "mlx5_1").unwrap(),
        None
    );
    assert_eq!(rdma_port_of(&messages["ports"], 4, 9).unwrap(), Some(2));
    assert_eq!(rdma_port_of(&messages["ports"], 4, 8).unwrap(), Some(1));
    assert_eq!(rdma_port_of(&messages["ports"], 3, 9).unwrap(), None);
    eprintln!(
        "netlink: {} constants, 2 requests and 2 answers match the kernel's headers",
        constants.len()
    );
}
