"""Train-time re-parameterizable blocks, one module per family; each folds exactly via the kernel algebra."""
from edgerep.blocks.acnet import ACBlock
from edgerep.blocks.base import FoldedConv, ReparamBlock
from edgerep.blocks.combos import DBBBasicBlock, DenseACBlock, ExpandACDBBBlock, PSACBlock, Res2NetACBlock
from edgerep.blocks.convbn import ConvBNAct
from edgerep.blocks.dbb import DiverseBranchBlock
from edgerep.blocks.ecb import ECB, SeqConv3x3
from edgerep.blocks.doconv import DOConv2d
from edgerep.blocks.expandnet import ExpandConv2d, ExpandLinear
from edgerep.blocks.layers import BNAndPad, IdentityBasedConv1x1, conv_bn
from edgerep.blocks.mixconv import MixConv2d
from edgerep.blocks.mobileone import MobileOneBlock, MobileOneStage
from edgerep.blocks.psconv import PolyScaleConv2d
from edgerep.blocks.qarepvgg import QARepVGGBlock
from edgerep.blocks.repmlp import PartitionFC, RepMLPBlock
from edgerep.blocks.repvgg import RepVGGBlock

__all__ = [
    "ReparamBlock",
    "FoldedConv",
    "RepVGGBlock",
    "QARepVGGBlock",
    "ACBlock",
    "DiverseBranchBlock",
    "MobileOneBlock",
    "DOConv2d",
    "ExpandConv2d",
    "ExpandLinear",
    "MixConv2d",
    "PolyScaleConv2d",
    "RepMLPBlock",
    "PartitionFC",
    "ConvBNAct",
    "DBBBasicBlock",
    "ExpandACDBBBlock",
    "Res2NetACBlock",
    "PSACBlock",
    "DenseACBlock",
    "MobileOneStage",
    "ECB",
    "SeqConv3x3",
    "BNAndPad",
    "IdentityBasedConv1x1",
    "conv_bn",
]
