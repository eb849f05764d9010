"""The built-in methods, tasks, models, metrics and aggregations, registered lazily (listing imports nothing heavy).

Adding a built-in: write the class, add one line here and one YAML spec in `methods/` or
`tasks/`. Third-party packages use the entry-point groups instead (see docs/extending.md).
"""

from fastrm_bench.registry import AGGREGATIONS, METHODS, METRICS, MODELS, TASKS

METHODS.register("random", "fastrm_bench.explainers.random_map:RandomMap",
                 description="Random baseline: i.i.d. uniform score per patch and token, seeded.")

TASKS.register("vqav2", "fastrm_bench.tasks.vqav2:VQAv2Task",
               description="VQAv2 open questions; soft accuracy over 10 human answers.", aliases=("vqa",))
TASKS.register("gqa", "fastrm_bench.tasks.gqa:GQATask",
               description="GQA compositional questions; exact match.")
TASKS.register("pope", "fastrm_bench.tasks.pope:POPETask",
               description="POPE yes/no object probes; accuracy, precision, recall, F1, yes-ratio per category.")
TASKS.register("pairs", "fastrm_bench.tasks.pairs:PairsTask",
               description="Two images per question: is the object in the left or the right image (from POPE's files).")
TASKS.register("clips", "fastrm_bench.tasks.clips:ClipsTask",
               description="Clips of the embedded world: is the object moving left or right (a video per question).")
TASKS.register("describe", "fastrm_bench.tasks.describe:DescribeTask",
               description="Describe the objects from left to right (COCO captions, per-word object ids); exact match.")

MODELS.register("tiny-llava-shapes", "fastrm_bench.models.zoo:tiny_llava_shapes",
                description="Embedded LLaVA (CLIP + Llama, 8x8 patches) trained on the synthetic shapes world; "
                            "ships with the package.")
MODELS.register("tiny-qwen-shapes", "fastrm_bench.models.zoo:tiny_qwen_shapes",
                description="Embedded Qwen2-VL (dynamic resolution) trained on variable-size shapes scenes and the "
                            "describe task; ships with the package.")
MODELS.register("tiny-qwen-shapes-multi", "fastrm_bench.models.zoo:tiny_qwen_shapes_multi",
                description="tiny-qwen-shapes fine-tuned on two-image (pairs) and clip (clips) questions by train-multi; "
                            "ships with the package.")
MODELS.register("llava-1.5-7b", "fastrm_bench.models.zoo:llava_15_7b",
                description="LLaVA-1.5-7B (llava-hf/llava-1.5-7b-hf) from the Hugging Face cache.")
MODELS.register("llava-1.5-13b", "fastrm_bench.models.zoo:llava_15_13b",
                description="LLaVA-1.5-13B (llava-hf/llava-1.5-13b-hf) from the Hugging Face cache.")

METHODS.register("chefer", "fastrm_bench.explainers.chefer:Chefer",
                 description="Chefer relevancy (the paper's Baseline), exact per token: one forward, batched gradients.",
                 aliases=("baseline",))
METHODS.register("chefer-reference", "fastrm_bench.explainers.chefer:CheferReference",
                 description="Chefer relevancy the slow public way (one backward per token, N x N products); for checks.")
METHODS.register("gradcam", "fastrm_bench.explainers.gradcam:GradCAM",
                 description="Grad-CAM on the vision layer feeding the projector (vision_feature_layer), per token.")
METHODS.register("gradcam-lm", "fastrm_bench.explainers.gradcam:GradCAMLM",
                 description="LM-side Grad-CAM: attention to image tokens x relu(gradient) on one LM layer.")
METHODS.register("attention", "fastrm_bench.explainers.attention:RawAttention",
                 description="Raw attention of the predicting position to the image tokens, mean over heads and layers.")
METHODS.register("rollout", "fastrm_bench.explainers.attention:AttentionRollout",
                 description="Attention rollout (Abnar & Zuidema): product of head-mean attention mixed with identity.")
METHODS.register("fastrm", "fastrm_bench.explainers.fastrm_method:FastRMMethod",
                 description="FastRM proxy: relevance probabilities from the last hidden states, no gradients.")
METHODS.register("oracle", "fastrm_bench.explainers.oracle:OracleMap",
                 description="Ground-truth mask of the referenced objects (upper bound; needs masks).")
METHODS.register("chefer-stale", "fastrm_bench.explainers.chefer:CheferStale",
                 description="Chefer with stale rows (the LLaVA interpretability app's KV-cache relevancy): exact at t=0 only.")
METHODS.register("dex-ar", "fastrm_bench.explainers.dex_ar:DexAR",
                 description="DEX-AR per-token maps: logit-lens attention gradients of the last layers, heads filtered.")
METHODS.register("dex-ar-sentence", "fastrm_bench.explainers.dex_ar:DexARSentence",
                 description="DEX-AR sentence map (tokens weighted visual vs linguistic), the same for every token.")
METHODS.register("tam", "fastrm_bench.explainers.tam:TokenActivationMap",
                 description="Token Activation Map: gradient-free logit activations, interference removed, rank Gaussian filter.")

METHODS.register("occlusion", "fastrm_bench.explainers.captum_methods:OcclusionMap",
                 description="Occlusion of image regions through Captum's FeatureAblation: each answer token's "
                             "log-probability drop when a region's tokens are removed (regions: cell x cell tokens).")
METHODS.register("kernel-shap", "fastrm_bench.explainers.captum_methods:KernelShapMap",
                 description="KernelSHAP over image regions through Captum (n_samples coalitions, seeded), each answer "
                             "token's log-probability explained; the harness' removal as the baseline.")

METHODS.register("rel-att", "fastrm_bench.explainers.mllms_know:RelativeAttention",
                 description="Relative attention (Zhang et al., ICLR 2025): one layer's attention to the image divided "
                             "by that under a generic question ('Write a general description of the image.').")
METHODS.register("grad-att", "fastrm_bench.explainers.mllms_know:GradientWeightedAttention",
                 description="Gradient-weighted attention (Zhang et al., ICLR 2025): mean over heads of A * relu(dlogp/dA) "
                             "at one layer (the authors' 14 of 32, scaled to the model's depth).")

METHODS.register("eagle", "fastrm_bench.explainers.eagle:EagleMap",
                 description="EAGLE (Chen et al., CVPR 2026): black-box greedy search over image regions scored by "
                             "insight + necessity of the answer's token probabilities; one map per answer (per_token: one "
                             "per token).")

METRICS.register("perturbation", "fastrm_bench.metrics.perturbation:Perturbation",
                 description="Positive (deletion) and negative perturbation: accuracy as image tokens are removed; AUCs.")
METRICS.register("insertion", "fastrm_bench.metrics.perturbation:Insertion",
                 description="Insertion: accuracy as image tokens are put back most relevant first; AUC.")
METRICS.register("probability", "fastrm_bench.metrics.probability:AnswerProbability",
                 description="Mean log-probability of the original answer under deletion, negative and insertion orders.")
METRICS.register("threshold", "fastrm_bench.metrics.threshold:ThresholdAgreement",
                 description="Per-patch accuracy/F1 of probability maps against binarised Chefer labels (FastRM).")
METRICS.register("localisation", "fastrm_bench.metrics.localisation:Localisation",
                 description="Relevance mass and pointing game on the question's objects (needs object masks).")
METRICS.register("image-localisation", "fastrm_bench.metrics.image_localisation:ImageLocalisation",
                 description="Several images or a clip: does the map choose the image showing the object, and point "
                             "at it inside each image (frame)? (samples with object masks)")
METRICS.register("token-localisation", "fastrm_bench.metrics.token_localisation:TokenLocalisation",
                 description="Per answer word: pointing game and mass of its map on its own object vs the others "
                             "(samples with per-word object ids, e.g. the describe task).")
METRICS.register("entropy", "fastrm_bench.metrics.entropy:EntropyConfidence",
                 description="Map entropy as answer confidence: rates below a calibrated threshold, and AUROC.")
METRICS.register("chair", "fastrm_bench.metrics.chair:Chair",
                 description="CHAIR_i / CHAIR_s (Rohrbach et al. 2018): hallucinated object mentions in captions "
                             "(samples with the scene's objects, e.g. the describe task).")
METRICS.register("hallucination", "fastrm_bench.metrics.hallucination:HallucinationDetection",
                 description="AUROC / AUPRC of each object word's map (entropy, peak, top-10% mass) at detecting "
                             "hallucinated object words.")
METRICS.register("image-reliance", "fastrm_bench.metrics.image_reliance:ImageReliance",
                 description="Answer log-probability with the image minus with every image token removed; "
                             "share of image-dependent samples (threshold, default 0.1 nats).")
METRICS.register("cost", "fastrm_bench.metrics.cost:Cost",
                 description="Seconds per map and per answer; peak memory where measured.")

AGGREGATIONS.register("mean", "fastrm_bench.aggregation:MeanOverContent",
                      description="Mean of the per-token maps over the answer's content tokens (the paper's).")
AGGREGATIONS.register("last", "fastrm_bench.aggregation:LastContentToken",
                      description="The map of the answer's last content token.")
AGGREGATIONS.register("dex-ar", "fastrm_bench.explainers.dex_ar:DexARTokenWeights",
                      description="DEX-AR's visual-vs-linguistic token weights, from the model's attention gradients.")
