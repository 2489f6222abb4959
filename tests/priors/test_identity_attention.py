"""Identity attention (the perturbation of PAG): each named self-attention layer outputs its
values, in our U-Net, diffusers' Attention (against diffusers' own PAG processor) and ADM's
blocks (both channel orders); everything is restored on exit; bad names are refused."""

import pytest
import torch

from torch import nn

import priors

from priors.unet import Attention


def _layer():
    torch.manual_seed(0)
    layer = Attention(8, heads=2, context_dim=None, groups=2, name="mid.self")
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(0.3 * torch.randn(p.shape))
    return layer.eval()


def test_our_layer_outputs_its_values_and_is_restored():
    layer = _layer()
    holder = nn.Module()
    holder.layer = layer
    x = torch.randn(2, 8, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = layer(x)
        with priors.identity_attention(holder, ["mid.self"]):
            perturbed = layer(x)
        again = layer(x)
        pixels = layer.norm(x).flatten(2).transpose(1, 2)
        v = layer.kv(pixels).chunk(2, dim=-1)[1]
        expected = x + layer.out(v).transpose(1, 2).reshape(2, 8, 4, 4)
    torch.testing.assert_close(perturbed, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(perturbed, plain, atol=1e-3)
    torch.testing.assert_close(again, plain, rtol=0, atol=0)
    assert not layer.maps._forward_hooks


@pytest.mark.parametrize("new_order", [False, True])
def test_an_adm_block_outputs_its_values_in_both_channel_orders(new_order):
    from deepinv.models.diffunet import AttentionBlock

    torch.manual_seed(0)
    net = nn.Module()
    net.middle_block = nn.Sequential(
        AttentionBlock(32, num_head_channels=8, use_new_attention_order=new_order)
    )
    block = net.middle_block[0]
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(0.2 * torch.randn(p.shape))
    x = torch.randn(2, 32, 3, 3)
    with torch.no_grad():
        plain = block(x)
        with priors.identity_attention(net, ["mid.0.self"]):
            perturbed = block(x)
        qkv = block.qkv(block.norm(x.reshape(2, 32, 9)))
        parts = qkv.chunk(3, 1) if new_order else qkv.reshape(2, 4, 24, 9).split(8, 2)
        v = parts[2].reshape(2, 32, 9)
        expected = (x.reshape(2, 32, 9) + block.proj_out(v)).reshape(2, 32, 3, 3)
        again = block(x)
    torch.testing.assert_close(perturbed, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(again, plain, rtol=0, atol=0)
    assert not block.attention._forward_hooks


def test_a_diffusers_layer_matches_diffusers_pag_processor():
    """diffusers' PAGIdentitySelfAttnProcessor2_0 on a batch [x, x] perturbs its second half:
    ours gives the same output on x alone; the processor is restored."""
    from diffusers.models.attention_processor import Attention as DiffusersAttention
    from diffusers.models.attention_processor import PAGIdentitySelfAttnProcessor2_0

    torch.manual_seed(0)
    attn = DiffusersAttention(
        16, heads=2, dim_head=8, norm_num_groups=4, residual_connection=True,
        bias=True, upcast_softmax=True, _from_deprecated_attn_block=True,
    ).eval()  # fmt: skip
    net = nn.Module()
    net.mid_block = nn.Module()
    net.mid_block.attentions = nn.ModuleList([attn])
    before = type(attn.processor)
    x = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = attn(x)
        with priors.identity_attention(net, ["mid.attentions.0.self"]):
            ours = attn(x)
        assert type(attn.processor) is before and "get_attention_scores" not in vars(attn)
        attn.set_processor(PAGIdentitySelfAttnProcessor2_0())
        theirs = attn(torch.cat([x, x]))[1:]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(ours, plain, atol=1e-3)


def test_bad_layer_names_are_refused():
    holder = nn.Module()
    holder.layer = _layer()
    for bad in ([], ["nope"]):
        with (
            pytest.raises(ValueError, match="self-attention layers"),
            priors.identity_attention(holder, bad),
        ):
            pass
    cross = nn.Module()
    cross.layer = Attention(8, heads=2, context_dim=4, groups=2, name="mid.cross")
    with (
        pytest.raises(ValueError, match="self-attention layers"),
        priors.identity_attention(cross, ["mid.cross"]),
    ):
        pass
