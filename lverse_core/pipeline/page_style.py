"""The style sheet of ``index.html`` (``index_page``): plain CSS, no fonts or scripts fetched from anywhere."""

INDEX_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
             "table.data{border-collapse:collapse;font-size:90%}table.data td,table.data th{border:1px solid #ccc;"
             "padding:3px 8px}.failed{color:#b00}.ok{color:#070}.verdict{background:#f3f6fa;border-left:4px solid "
             "#4c72b0;padding:4px 10px}.meta{color:#555}.item{margin:1.2em 0 2em}img{max-width:900px}"
             "h2{border-bottom:1px solid #ccc;margin-top:2em}nav{margin:1em 0}.links{font-size:85%}")
