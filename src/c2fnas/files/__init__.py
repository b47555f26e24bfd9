"""Files every layer writes or reads: atomic writes (``atomic``), model folders
(``model_folder``), the run folder's layout (``run_folder``) and folder locks (``lock``). Below
data, training and inference, so that none of them imports another for these."""
