"""The rater's page of the human-evaluation kit (paper §4.2): one self-contained HTML form per rater.

Images are embedded as PNG data URIs and the page loads nothing from the network (a Content-Security-Policy
forbids it); captions and ids are HTML-escaped, so a caption holding markup shows as text. The "Save answers"
button refuses to save until every set is answered, then downloads ``answers_<form_id>.json`` through a Blob:
{"version", "study", "form_id", "rater", "answers": [{"set_id", "choice": "first"|"second"|"both"}]}.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Mapping

FORMAT_VERSION = 1


def image_data_uri(image: Any, upscale: int = 256) -> str:
    """A PNG data URI of an image (tensor in [-1, 1] / uint8 (3, H, W), a file path or a shard member), upscaled for viewing."""
    from PIL import Image

    from lverse_core.data.pixels import uint8_from_signed

    if isinstance(image, (str, Path)):
        pil = Image.open(image).convert("RGB")
    elif hasattr(image, "read_bytes"):  # an image inside a tar shard (lverse_core.data.shards.ShardMember)
        pil = Image.open(io.BytesIO(image.read_bytes())).convert("RGB")
    else:
        t = uint8_from_signed(image)
        pil = Image.fromarray(t.permute(1, 2, 0).cpu().numpy())
    if max(pil.size) < upscale:
        pil = pil.resize((upscale, upscale), Image.NEAREST)  # small embedded images: keep the pixels crisp
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>Caption evaluation, form {form_id}</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 1em auto; padding: 0 1em; }}
.set {{ border: 1px solid #ccc; border-radius: 6px; padding: 1em; margin: 1em 0; display: flex; gap: 1.5em; }}
.set img {{ width: 256px; height: 256px; image-rendering: pixelated; }}
.caption {{ margin: .4em 0 1em 0; padding: .4em; background: #f4f4f4; }}
label {{ display: block; margin: .2em 0; }}
#status {{ font-weight: bold; margin: 1em 0; }}
</style></head>
<body data-study="{study}" data-form="{form_id}">
<h1>Which caption well describes the given image?</h1>
<p>For each image, choose the caption that describes it well, or "Both captions well describe the image".
Answer all {n} sets, then press <b>Save answers</b> and send the downloaded file back. Nothing leaves your computer
until you send it.</p>
<p><label>Your name or alias (optional): <input id="rater" type="text" maxlength="80"></label></p>
{sets}
<div id="status"></div>
<button id="save" type="button">Save answers</button>
<script>
(function () {{
  var body = document.body;
  var sets = Array.prototype.slice.call(document.querySelectorAll(".set"));
  document.getElementById("save").addEventListener("click", function () {{
    var answers = [], missing = [];
    sets.forEach(function (s, i) {{
      var checked = s.querySelector("input[type=radio]:checked");
      if (checked) {{ answers.push({{set_id: s.dataset.set, choice: checked.value}}); }}
      else {{ missing.push(i + 1); }}
    }});
    var status = document.getElementById("status");
    if (missing.length) {{ status.textContent = "Please answer set(s) " + missing.join(", ") + " first."; return; }}
    var result = {{version: {version}, study: body.dataset.study, form_id: body.dataset.form,
                  rater: document.getElementById("rater").value, answers: answers}};
    var blob = new Blob([JSON.stringify(result, null, 1)], {{type: "application/json"}});
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "answers_" + body.dataset.form + ".json";
    document.body.appendChild(a); a.click(); a.remove();
    status.textContent = "Saved " + a.download + " (" + answers.length + " answers). Thank you!";
  }});
}})();
</script>
</body></html>
"""

_SET = """<div class="set" data-set="{set_id}">
<img alt="image {num}" src="{src}">
<div><h3>Set {num} of {n}</h3>
<div>Caption 1:</div><div class="caption" id="{set_id}-c1">{c1}</div>
<div>Caption 2:</div><div class="caption" id="{set_id}-c2">{c2}</div>
<label><input type="radio" name="{set_id}" value="first"> Caption 1</label>
<label><input type="radio" name="{set_id}" value="second"> Caption 2</label>
<label><input type="radio" name="{set_id}" value="both"> Both captions well describe the image</label>
</div></div>
"""


def render_form(study: dict, form: dict, png: Mapping[int, str]) -> str:
    """One self-contained HTML page; every caption and id is HTML-escaped (a caption is text, never markup)."""
    esc = html.escape
    n = len(form["sets"])
    sets = "".join(_SET.format(set_id=esc(s["set_id"]), num=i + 1, n=n, src=png[s["image_id"]],
                               c1=esc(s["captions"][0]), c2=esc(s["captions"][1]))
                   for i, s in enumerate(form["sets"]))
    return _PAGE.format(form_id=esc(form["form_id"]), study=esc(study["study"]), n=n, sets=sets,
                        version=FORMAT_VERSION)


